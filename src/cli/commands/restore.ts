/** `backup-proxy restore`: rebuilds a disk at a point in time from its chain. */
import type { Command } from 'commander'
import { NotAvailableError } from '../../common/errors.js'
import type { CliIo } from '../context.js'


export function registerRestore(program: Command, _io: CliIo): void {
  program
    .command('restore')
    .description('rebuild a disk from its backup chain as a raw image or a single VHD')
    .argument('<url>', 'remote URL')
    .requiredOption('--vm <uuid>', 'VM uuid')
    .requiredOption('--disk <vdiUuid>', 'VDI uuid of the disk')
    .option('--at <timestamp>', 'backup timestamp (YYYYMMDDTHHmmssZ); default newest')
    .requiredOption('--to <file>', 'output file: .raw or .vhd')
    .action(() => {
      throw new NotAvailableError('`backup-proxy restore`')
    })
}

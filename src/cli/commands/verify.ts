/** `backup-proxy verify`: checks every backup chain on a remote. */
import type { Command } from 'commander'
import { NotAvailableError } from '../../common/errors.js'
import type { CliIo } from '../context.js'


export function registerVerify(program: Command, _io: CliIo): void {
  program
    .command('verify')
    .description('check backup chains on a remote: structure, parents, metadata, orphans')
    .argument('<url>', 'remote URL (file://, nfs://, smb://, s3://)')
    .option('--vm <uuid>', 'only this VM')
    .option('--full', 'also read and checksum every block')
    .option('--json', 'machine-readable output')
    .action(() => {
      throw new NotAvailableError('`backup-proxy verify`')
    })
}

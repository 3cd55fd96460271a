/** `backup-proxy xapi-sim`: runs the XAPI simulator. */
import type { Command } from 'commander'
import { NotAvailableError } from '../../common/errors.js'
import type { CliIo } from '../context.js'
import { intArg, sizeArg } from '../context.js'

export function registerXapiSim(program: Command, _io: CliIo): void {
  program
    .command('xapi-sim')
    .description('run an XAPI simulator (JSON-RPC + export_raw_vdi) with deterministic VMs and disks')
    .option('--vms <n>', 'number of VMs', intArg('--vms', 0, 10_000), 2)
    .option('--disk-size <size>', 'virtual size of each disk', sizeArg('--disk-size'), 1024 ** 3)
    .option('--disks-per-vm <n>', 'disks per VM', intArg('--disks-per-vm', 0, 16), 1)
    .option('--fill-ratio <ratio>', 'share of blocks that hold data (0..1)', '0.5')
    .option('--seed <seed>', 'seed of the disk content', '1')
    .option('--listen <host:port>', 'listen address', '127.0.0.1:8080')
    .option('--user <name>', 'accepted user', 'root')
    .option('--password <pw>', 'accepted password', 'password')
    .action(() => {
      throw new NotAvailableError('`backup-proxy xapi-sim`')
    })
}

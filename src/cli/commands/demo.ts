/** `backup-proxy demo`: a real backup of simulated VMs through the queue to a local remote. */
import type { Command } from 'commander'
import { NotAvailableError } from '../../common/errors.js'
import type { CliIo } from '../context.js'
import { intArg, sizeArg } from '../context.js'

export function registerDemo(program: Command, _io: CliIo): void {
  program
    .command('demo')
    .description('start an XAPI simulator and a proxy, run a full then a delta backup through the queue to a local remote, verify and restore')
    .option('--vms <n>', 'simulated VMs', intArg('--vms', 1, 16), 2)
    .option('--disk-size <size>', 'virtual size of each disk', sizeArg('--disk-size'), 256 * 1024 ** 2)
    .option('--dir <path>', 'local remote directory (default: a new temp dir, kept)')
    .option('--redis-url <url>', 'Redis URL (env REDIS_URL); a private redis-server is started if none answers')
    .action(() => {
      throw new NotAvailableError('`backup-proxy demo`')
    })
}

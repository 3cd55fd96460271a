/** `backup-proxy serve`: runs a proxy: BullMQ workers for its queues, the thread pool, and the HTTP endpoints. */
import type { Command } from 'commander'
import { NotAvailableError } from '../../common/errors.js'
import type { CliIo } from '../context.js'
import { collect, intArg } from '../context.js'

export function registerServe(program: Command, _io: CliIo): void {
  program
    .command('serve')
    .description('run a proxy: serve queue {proxy:<id>} (and pools), stream disks in threads, expose /metrics /healthz /readyz')
    .option('--proxy <id>', 'proxy id (config proxy.id)')
    .option('--pool <name>', 'also serve this pool queue (repeatable)', collect)
    .option('--threads <n>', 'stream threads', intArg('--threads', 1, 64))
    .option('--concurrency <n>', 'jobs in parallel per queue', intArg('--concurrency', 1, 256))
    .option('--listen <host:port>', 'HTTP address for metrics and health')
    .option('--redis-url <url>', 'Redis URL (env REDIS_URL)')
    .action(() => {
      throw new NotAvailableError('`backup-proxy serve`')
    })
}

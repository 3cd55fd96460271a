/** `backup-proxy backup`: enqueues a backup.run task and follows it. */
import type { Command } from 'commander'
import { NotAvailableError } from '../../common/errors.js'
import type { CliIo } from '../context.js'
import { collect } from '../context.js'

export function registerBackup(program: Command, _io: CliIo): void {
  program
    .command('backup')
    .description('enqueue a backup run for a proxy or a pool and follow its progress')
    .option('--proxy <id>', 'proxy that runs it')
    .option('--pool <name>', 'pool whose proxies may run it')
    .option('--task <file>', 'full backup.run task as JSON (XO backup.run shape)')
    .option('--xapi <url>', 'XAPI URL of the pool (https://user:password@host)')
    .option('--vm <uuid>', 'VM to back up (repeatable)', collect)
    .option('--remote <url>', 'target remote URL (repeatable)', collect)
    .option('--mode <mode>', 'delta or full', 'delta')
    .option('--job-id <id>', 'backup job id (same id never runs twice at once)')
    .option('--no-wait', 'return once enqueued')
    .option('--redis-url <url>', 'Redis URL (env REDIS_URL)')
    .action(() => {
      throw new NotAvailableError('`backup-proxy backup`')
    })
}

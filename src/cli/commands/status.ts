/** `backup-proxy status`: shows queues and live proxies. */
import type { Command } from 'commander'
import { NotAvailableError } from '../../common/errors.js'
import type { CliIo } from '../context.js'


export function registerStatus(program: Command, _io: CliIo): void {
  program
    .command('status')
    .description('show waiting/active/failed counts per queue and the live proxies with their load')
    .option('--json', 'machine-readable output')
    .option('--redis-url <url>', 'Redis URL (env REDIS_URL)')
    .action(() => {
      throw new NotAvailableError('`backup-proxy status`')
    })
}

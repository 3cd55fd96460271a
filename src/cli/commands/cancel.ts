/** `backup-proxy cancel`: cancels a queued or running job. */
import type { Command } from 'commander'
import { NotAvailableError } from '../../common/errors.js'
import type { CliIo } from '../context.js'


export function registerCancel(program: Command, _io: CliIo): void {
  program
    .command('cancel')
    .description('cancel a queued or running job; a running one stops cleanly and ends as interrupted')
    .argument('<jobId>', 'job id as printed by backup')
    .option('--proxy <id>', 'queue of this proxy')
    .option('--pool <name>', 'queue of this pool')
    .option('--redis-url <url>', 'Redis URL (env REDIS_URL)')
    .action(() => {
      throw new NotAvailableError('`backup-proxy cancel`')
    })
}

/**
 * `backup-proxy cancel <jobId> --proxy <id> | --pool <name>`: cancels a queued or running job. A waiting
 * or delayed job is removed; a running one is signalled: its proxy stops the streams cleanly (temporaries
 * removed, snapshot cleaned up) and the job ends as interrupted with E_CANCELLED. An unknown job id exits 2 (bad input).
 */
import type { Command } from 'commander'
import { BackupProxyError } from '../../common/errors.js'
import type { CliIo } from '../context.js'
import { commandConfig } from '../context.js'
import { targetOf } from './backup.js'

const MESSAGES = {
  removed: 'was waiting: removed from the queue',
  signalled: 'is running: its proxy was asked to stop it (it ends as interrupted)',
  finished: 'had already finished: nothing to cancel',
  'not-found': 'not found',
} as const

export function registerCancel(program: Command, io: CliIo): void {
  program
    .command('cancel')
    .description('cancel a queued or running job; a running one stops cleanly and ends as interrupted')
    .argument('<jobId>', 'job id as printed by backup')
    .option('--proxy <id>', 'queue of this proxy')
    .option('--pool <name>', 'queue of this pool')
    .option('--reason <text>', 'recorded in the job (default: cancelled by the operator)')
    .option('--json', 'machine-readable output: {"jobId","outcome"}')
    .option('--redis-url <url>', 'Redis URL (env REDIS_URL)')
    .action(async (jobId: string, flags: { proxy?: string; pool?: string; reason?: string; json?: boolean; redisUrl?: string }, cmd: Command) => {
      const target = targetOf(flags)
      const config = await commandConfig(cmd, { redis: { url: flags.redisUrl } })
      const { EnqueueClient } = await import('../../queue/client.js')
      const client = await EnqueueClient.fromConfig(config, undefined, { sealKey: false })
      try {
        const outcome = await client.cancel(target, jobId, flags.reason)
        if (outcome === 'not-found') throw new BackupProxyError('E_USAGE', `job ${jobId} not found in that queue (check --proxy/--pool)`)
        io.stdout(flags.json === true ? `${JSON.stringify({ jobId, outcome })}\n` : `job ${jobId} ${MESSAGES[outcome]}\n`)
      } finally {
        await client.close()
      }
    })
}

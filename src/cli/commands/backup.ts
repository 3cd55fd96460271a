/**
 * `backup-proxy backup`: enqueues a backup.run task for a proxy or a pool and follows it (./backup-run.ts):
 * a progress bar (or plain lines), the task-log events naming each VM and remote, then a human summary
 * (or `--json`). Exit 0 on success, 1 when the run failed or was interrupted or no live proxy serves the
 * queue (E_NO_PROXY, unless `--no-wait` or `--allow-no-proxy`), 2 for bad usage or an invalid task.
 *
 * The task comes from `--task <file>` (XO backup.run shape) or from flags: `--xapi https://user@host`,
 * `--vm <uuid|name>` (repeatable; names become an XO smart-mode pattern on name_label, resolved by the
 * proxy), `--remote <url>`. Secrets never need argv: the XAPI password from `--xapi-password-file` or
 * BACKUP_PROXY_XAPI_PASSWORD, a remote's password from `--remote-password-file` or
 * BACKUP_PROXY_REMOTE_PASSWORD, the key of encrypted remotes from `--encryption-key-file` or
 * BACKUP_PROXY_ENCRYPTION_KEY; all are sealed before they reach Redis. Heavy modules load in the action.
 */
import type { Command } from 'commander'
import { UsageError } from '../../common/errors.js'
import type { QueueTarget } from '../../queue/names.js'
import type { CliIo } from '../context.js'
import { collect, durationArg, intArg } from '../context.js'
import { encryptionKeyOptions, type EncryptionKeyFlags } from '../encryption-key.js'
import { REMOTE_PASSWORD_FILE_HELP } from '../secrets.js'

export interface BackupFlags extends EncryptionKeyFlags {
  proxy?: string
  pool?: string
  task?: string
  xapi?: string
  xapiUser?: string
  xapiPasswordFile?: string
  remotePasswordFile?: string
  vm?: string[]
  remote?: string[]
  mode: string
  jobId?: string
  schedule?: string
  wait: boolean
  allowNoProxy?: boolean
  json?: boolean
  priority?: number
  delay?: number
  redisUrl?: string
  allowUnauthorized?: boolean
}

export function targetOf(flags: { proxy?: string; pool?: string }): QueueTarget {
  if ((flags.proxy === undefined) === (flags.pool === undefined)) throw new UsageError('give exactly one of --proxy <id> or --pool <name>')
  return flags.proxy !== undefined ? { proxy: flags.proxy } : { pool: flags.pool! }
}

export function registerBackup(program: Command, io: CliIo): void {
  const cmd = program
    .command('backup')
    .description('enqueue a backup run for a proxy or a pool and follow its progress')
    .option('--proxy <id>', 'proxy that runs it')
    .option('--pool <name>', 'pool whose proxies may run it')
    .option('--task <file>', 'full backup.run task as JSON (XO backup.run shape); excludes --xapi/--vm/--remote')
    .option('--xapi <url>', 'XAPI URL of the pool master (https://user@host)')
    .option('--xapi-user <name>', 'XAPI user (default: the user in --xapi)')
    .option('--xapi-password-file <path>', 'file holding the XAPI password (or env BACKUP_PROXY_XAPI_PASSWORD)')
    .option('--allow-unauthorized', 'accept a self-signed XAPI certificate')
    .option('--vm <uuid|name>', 'VM to back up, by uuid or name (repeatable)', collect)
    .option('--remote <url>', 'target remote URL (repeatable)', collect)
    .option('--remote-password-file <path>', REMOTE_PASSWORD_FILE_HELP)
    .option('--mode <mode>', 'delta or full', 'delta')
    .option('--job-id <id>', 'backup job id (same id and schedule never run twice at once)')
    .option('--schedule <id>', 'schedule id', 'cli')
    .option('--priority <n>', '1 (highest) to 2097152', intArg('--priority', 1, 2_097_152))
    .option('--delay <duration>', 'start no earlier than this from now (30s, 5m)', durationArg('--delay'))
    .option('--no-wait', 'return once enqueued (no check for a live proxy)')
    .option('--allow-no-proxy', 'enqueue even when no live proxy serves the queue (it waits for one)')
    .option('--json', 'print the final summary as JSON (no progress lines unless on a terminal)')
    .option('--redis-url <url>', 'Redis URL (env REDIS_URL)')
  encryptionKeyOptions(cmd).action(async (flags: BackupFlags, c: Command) => {
    const { runBackupCommand } = await import('./backup-run.js')
    await runBackupCommand(flags, c, io)
  })
}

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
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import type { Command } from 'commander'
import { UsageError } from '../../common/errors.js'
import { redactString } from '../../common/redact.js'
import type { QueueTarget } from '../../queue/names.js'
import type { TaskInput } from '../../queue/tasks.js'
import type { CliIo } from '../context.js'
import { collect, durationArg, intArg } from '../context.js'
import { cliEncryptionKey, encryptionKeyOptions, refuseKeyInArgv, type EncryptionKeyFlags } from '../encryption-key.js'
import { remoteUrlWithSecret, xapiTarget } from '../secrets.js'

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

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export function targetOf(flags: { proxy?: string; pool?: string }): QueueTarget {
  if ((flags.proxy === undefined) === (flags.pool === undefined)) throw new UsageError('give exactly one of --proxy <id> or --pool <name>')
  return flags.proxy !== undefined ? { proxy: flags.proxy } : { pool: flags.pool! }
}

/** `vms` of the job: a uuid list, or XO's smart-mode pattern on name_label for names. */
export function vmsPattern(vms: readonly string[]): Record<string, unknown> {
  const uuids = vms.filter((v) => UUID_RE.test(v))
  if (uuids.length === vms.length) return { uuid: vms.length === 1 ? vms[0] : { __or: [...vms] } }
  if (uuids.length > 0) throw new UsageError(`--vm: give either VM uuids or VM names in one run, not both (uuids: ${uuids.join(', ')})`)
  return { name_label: vms.length === 1 ? vms[0] : { __or: [...vms] } }
}

async function taskFromFile(flags: BackupFlags, cmd: Command): Promise<TaskInput> {
  const clash = ['xapi', 'xapiUser', 'xapiPasswordFile', 'vm', 'remote', 'remotePasswordFile', 'encryptionKeyFile', 'jobId'].filter((k) => flags[k as keyof BackupFlags] !== undefined)
  if (cmd.getOptionValueSource('mode') === 'cli') clash.push('mode')
  if (clash.length > 0) {
    const names = clash.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`)
    throw new UsageError(`--task <file> carries the whole task: ${names.join(', ')} would be ignored; put them in the task file or drop --task`)
  }
  refuseKeyInArgv(flags, [])
  let text: string
  try {
    text = await readFile(flags.task!, 'utf8')
  } catch (error) {
    throw new UsageError(`--task: cannot read ${flags.task}: ${(error as Error).message}`, { cause: error })
  }
  try {
    return JSON.parse(text) as TaskInput
  } catch (error) {
    throw new UsageError(`--task: ${flags.task} is not valid JSON: ${(error as Error).message}`, { cause: error })
  }
}

export async function taskFromFlags(flags: BackupFlags, cmd: Command): Promise<TaskInput> {
  if (flags.task !== undefined) return taskFromFile(flags, cmd)
  if (flags.xapi === undefined || (flags.vm ?? []).length === 0 || (flags.remote ?? []).length === 0) {
    throw new UsageError('give --task <file>, or --xapi <url> with at least one --vm <uuid|name> and one --remote <url>')
  }
  const vms = vmsPattern(flags.vm ?? [])
  const xapi = await xapiTarget(flags.xapi, flags)
  const jobId = flags.jobId ?? 'cli'
  // the key of encrypted --remote targets (sealed with the task before it reaches Redis)
  const encryptionKey = await cliEncryptionKey(flags, flags.remote ?? [])
  const options = encryptionKey === undefined ? {} : { options: { encryptionKey } }
  const remotes: Record<string, { url: string; options?: { encryptionKey: string } }> = {}
  for (const url of flags.remote ?? []) remotes[remoteIdOf(url)] = { url: await remoteUrlWithSecret(url, flags), ...options }
  return {
    kind: 'backup.run',
    job: { id: jobId, name: `backup-proxy CLI (${jobId})`, mode: flags.mode as 'delta' | 'full', vms: vms, settings: { '': {} } },
    schedule: { id: flags.schedule ?? 'cli' },
    remotes,
    xapis: { xapi0: { url: xapi.url, credentials: { username: xapi.username, password: xapi.password }, allowUnauthorized: flags.allowUnauthorized === true } },
  }
}

/**
 * A stable id for a `--remote` URL (metrics label it, the task log names it): a short hash of the URL
 * without its secrets or options, the same on every run (an XO task file keeps XO's remote ids).
 */
export function remoteIdOf(url: string): string {
  return `cli-${createHash('sha256').update(redactString(url).replace(/\?.*$/s, '')).digest('hex').slice(0, 12)}`
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
    .option('--remote-password-file <path>', 'file holding the remote\'s password or S3 secret key, for a URL without it (or env BACKUP_PROXY_REMOTE_PASSWORD)')
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

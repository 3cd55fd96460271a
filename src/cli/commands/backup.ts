/**
 * `backup-proxy backup`: enqueues a backup.run task for a proxy or a pool and follows it: progress and
 * task-log lines on stderr, the final summary (JSON) on stdout; exit 0 on success, 1 when the run failed
 * or was interrupted, 2 for an invalid task. The task comes from `--task <file>` (XO backup.run shape) or
 * from flags (`--xapi https://user:password@host --vm <uuid> --remote <url>`); credentials are sealed
 * before they reach Redis (config security.sealKey/sealKeyFile). The key of encrypted `--remote` targets comes
 * from --encryption-key-file or BACKUP_PROXY_ENCRYPTION_KEY (never argv) and is sealed with the task.
 */
import { readFile } from 'node:fs/promises'
import type { Command } from 'commander'
import { BackupProxyError, UsageError } from '../../common/errors.js'
import { redactString } from '../../common/redact.js'
import { EnqueueClient } from '../../queue/client.js'
import type { QueueTarget } from '../../queue/names.js'
import type { TaskInput } from '../../queue/tasks.js'
import type { CliIo } from '../context.js'
import { collect, commandConfig, commandLogger, durationArg, intArg } from '../context.js'
import { cliEncryptionKey, encryptionKeyOptions, refuseKeyInArgv, type EncryptionKeyFlags } from '../encryption-key.js'

interface BackupFlags extends EncryptionKeyFlags {
  proxy?: string
  pool?: string
  task?: string
  xapi?: string
  vm?: string[]
  remote?: string[]
  mode: string
  jobId?: string
  schedule?: string
  wait: boolean
  priority?: number
  delay?: number
  redisUrl?: string
  allowUnauthorized?: boolean
}

export function targetOf(flags: { proxy?: string; pool?: string }): QueueTarget {
  if ((flags.proxy === undefined) === (flags.pool === undefined)) throw new UsageError('give exactly one of --proxy <id> or --pool <name>')
  return flags.proxy !== undefined ? { proxy: flags.proxy } : { pool: flags.pool! }
}

async function taskFromFlags(flags: BackupFlags): Promise<TaskInput> {
  if (flags.task !== undefined) {
    refuseKeyInArgv(flags, [])
    if (flags.encryptionKeyFile !== undefined) throw new UsageError('--encryption-key-file goes with --remote; with --task, put the key in the task\'s remotes.<id>.options.encryptionKey')
    let text: string
    try {
      text = await readFile(flags.task, 'utf8')
    } catch (error) {
      throw new UsageError(`--task: cannot read ${flags.task}: ${(error as Error).message}`, { cause: error })
    }
    try {
      return JSON.parse(text) as TaskInput
    } catch (error) {
      throw new UsageError(`--task: ${flags.task} is not valid JSON: ${(error as Error).message}`, { cause: error })
    }
  }
  if (flags.xapi === undefined || (flags.vm ?? []).length === 0 || (flags.remote ?? []).length === 0) {
    throw new UsageError('give --task <file>, or --xapi <url> with at least one --vm <uuid> and one --remote <url>')
  }
  let xapi: URL
  try {
    xapi = new URL(flags.xapi)
  } catch (error) {
    throw new UsageError(`--xapi: not a URL: ${redactString(flags.xapi)}`, { cause: error })
  }
  const credentials = { username: decodeURIComponent(xapi.username), password: decodeURIComponent(xapi.password) }
  xapi.username = ''
  xapi.password = ''
  const jobId = flags.jobId ?? 'cli'
  // the key of encrypted --remote targets (sealed with the task before it reaches Redis)
  const encryptionKey = await cliEncryptionKey(flags, flags.remote ?? [])
  const options = encryptionKey === undefined ? {} : { options: { encryptionKey } }
  return {
    kind: 'backup.run',
    job: { id: jobId, name: `backup-proxy CLI (${jobId})`, mode: flags.mode as 'delta' | 'full', vms: { uuid: flags.vm ?? [] }, settings: { '': {} } },
    schedule: { id: flags.schedule ?? 'cli' },
    remotes: Object.fromEntries((flags.remote ?? []).map((url, i) => [`remote${i}`, { url, ...options }])),
    xapis: { xapi0: { url: xapi.toString().replace(/\/$/, ''), credentials, allowUnauthorized: flags.allowUnauthorized === true } },
  }
}

export function registerBackup(program: Command, io: CliIo): void {
  const cmd = program
    .command('backup')
    .description('enqueue a backup run for a proxy or a pool and follow its progress')
    .option('--proxy <id>', 'proxy that runs it')
    .option('--pool <name>', 'pool whose proxies may run it')
    .option('--task <file>', 'full backup.run task as JSON (XO backup.run shape)')
    .option('--xapi <url>', 'XAPI URL of the pool (https://user:password@host)')
    .option('--allow-unauthorized', 'accept a self-signed XAPI certificate')
    .option('--vm <uuid>', 'VM to back up (repeatable)', collect)
    .option('--remote <url>', 'target remote URL (repeatable)', collect)
    .option('--mode <mode>', 'delta or full', 'delta')
    .option('--job-id <id>', 'backup job id (same id and schedule never run twice at once)')
    .option('--schedule <id>', 'schedule id', 'cli')
    .option('--priority <n>', '1 (highest) to 2097152', intArg('--priority', 1, 2_097_152))
    .option('--delay <duration>', 'start no earlier than this from now (30s, 5m)', durationArg('--delay'))
    .option('--no-wait', 'return once enqueued')
    .option('--redis-url <url>', 'Redis URL (env REDIS_URL)')
  encryptionKeyOptions(cmd).action(async (flags: BackupFlags, cmd: Command) => {
    const target = targetOf(flags)
    const config = await commandConfig(cmd, { redis: { url: flags.redisUrl } })
    const task = await taskFromFlags(flags)
    const client = await EnqueueClient.fromConfig(config, commandLogger(config))
    try {
      const handle = await client.enqueue(target, task, {
        ...(flags.priority === undefined ? {} : { priority: flags.priority }),
        ...(flags.delay === undefined ? {} : { delayMs: flags.delay }),
      })
      if (!flags.wait) {
        io.stdout(`${JSON.stringify({ queue: handle.queue, jobId: handle.id })}\n`)
        return
      }
      io.stderr(`enqueued ${handle.id} in ${handle.queue}\n`)
      let last = -1
      handle.onProgress((p) => {
        if (p.percent !== last) {
          last = p.percent
          io.stderr(`progress ${p.percent}%\n`)
        }
      })
      handle.onTaskLog((e) => {
        if (e.event === 'start') io.stderr(`start ${e.message}${e.data === undefined ? '' : ` ${JSON.stringify(e.data)}`}\n`)
        else if (e.event === 'end') io.stderr(`end ${e.status}\n`)
        else io.stderr(`${e.event} ${e.message}\n`)
      })
      await handle.ready()
      const summary = await handle.result()
      io.stdout(`${JSON.stringify(summary, null, 2)}\n`)
      if (summary.status !== 'success') {
        // a cancel or timeout keeps its own code (E_CANCELLED / E_TIMEOUT); anything else is E_BACKUP
        const code = summary.status === 'interrupted' && summary.error?.code === 'E_TIMEOUT' ? 'E_TIMEOUT' : summary.status === 'interrupted' ? 'E_CANCELLED' : 'E_BACKUP'
        throw new BackupProxyError(code, `job ${handle.id} ended ${summary.status}${summary.error === undefined ? '' : `: [${summary.error.code ?? ''}] ${summary.error.message}`}`)
      }
    } finally {
      await client.close()
    }
  })
}

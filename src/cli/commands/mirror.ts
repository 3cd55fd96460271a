/**
 * `backup-proxy mirror`: enqueues a mirror backup (XO's `mirrorBackup`: the backups of a source remote
 * copied to target remotes, with their retention) for a proxy or a pool and follows it like `backup`
 * (../follow.ts): a progress bar with bytes, rate and ETA on a terminal (plain lines otherwise) and the
 * task-log events on stderr, then the task tree and an outcome line on stdout (`--json`: the summary as
 * JSON). Exit 0 on success, 1 when it failed or was interrupted or no live proxy serves the queue
 * (E_NO_PROXY, unless `--no-wait` or `--allow-no-proxy`), 2 for an invalid task. From flags (`--source <url> --remote <url> [--retention N]
 * [--vm <uuid>]`: the VMs to mirror, default all) or `--task <file>` (a backup.mirror task, or XO's
 * backup.run parameters of a mirror job translated as the API does).
 */
import { readFile } from 'node:fs/promises'
import type { Command } from 'commander'
import { UsageError } from '../../common/errors.js'
import type { TaskInput } from '../../queue/tasks.js'
import type { CliIo } from '../context.js'
import { collect, commandConfig, commandLogger, intArg } from '../context.js'
import { targetOf } from './backup.js'

interface MirrorFlags {
  proxy?: string
  pool?: string
  task?: string
  source?: string
  remote?: string[]
  vm?: string[]
  mode: string
  retention?: number
  jobId?: string
  schedule: string
  wait: boolean
  allowNoProxy?: boolean
  json?: boolean
  redisUrl?: string
}

async function mirrorTaskOf(flags: MirrorFlags): Promise<TaskInput> {
  if (flags.task !== undefined) {
    try {
      return JSON.parse(await readFile(flags.task, 'utf8')) as TaskInput
    } catch (error) {
      throw new UsageError(`--task: cannot read ${flags.task} as JSON: ${(error as Error).message}`, { cause: error })
    }
  }
  if (flags.source === undefined || (flags.remote ?? []).length === 0) throw new UsageError('give --task <file>, or --source <url> and at least one --remote <url>')
  if (flags.mode !== 'delta' && flags.mode !== 'full') throw new UsageError(`--mode must be delta or full, got ${flags.mode}`)
  const jobId = flags.jobId ?? 'cli-mirror'
  const vms = flags.vm ?? []
  return {
    kind: 'backup.mirror',
    job: {
      id: jobId,
      name: `backup-proxy CLI mirror (${jobId})`,
      mode: flags.mode,
      sourceRemote: 'source',
      ...(vms.length === 0 ? {} : { filter: { vm: { uuid: { __or: vms } } } }),
      settings: { '': flags.retention === undefined ? {} : { exportRetention: flags.retention } },
    },
    schedule: { id: flags.schedule },
    remotes: { source: { url: flags.source }, ...Object.fromEntries((flags.remote ?? []).map((url, i) => [`remote${i}`, { url }])) },
  }
}

export function registerMirror(program: Command, io: CliIo): void {
  program
    .command('mirror')
    .description('enqueue a mirror backup (copy the backups of a source remote to other remotes) and follow it')
    .option('--proxy <id>', 'proxy that runs it')
    .option('--pool <name>', 'pool whose proxies may run it')
    .option('--task <file>', 'backup.mirror task as JSON')
    .option('--source <url>', 'remote whose backups are copied')
    .option('--remote <url>', 'target remote URL (repeatable)', collect)
    .option('--vm <uuid>', 'mirror only this VM\'s backups (repeatable; default every VM)', collect)
    .option('--mode <mode>', 'delta or full backups', 'delta')
    .option('--retention <n>', 'backups of this mirror kept on each target (exportRetention)', intArg('--retention', 1, 10_000))
    .option('--job-id <id>', 'mirror job id (its backups on the targets carry it)')
    .option('--schedule <id>', 'schedule id', 'cli')
    .option('--no-wait', 'return once enqueued (no check for a live proxy)')
    .option('--allow-no-proxy', 'enqueue even when no live proxy serves the queue (it waits for one)')
    .option('--json', 'print the final summary as JSON (no progress lines unless on a terminal)')
    .option('--redis-url <url>', 'Redis URL (env REDIS_URL)')
    .action(async (flags: MirrorFlags, cmd: Command) => {
      const target = targetOf(flags)
      const config = await commandConfig(cmd, { redis: { url: flags.redisUrl } })
      const task = await mirrorTaskOf(flags)
      const [{ EnqueueClient }, { assertLiveProxy }] = await Promise.all([import('../../queue/client.js'), import('./backup-run.js')])
      const client = await EnqueueClient.fromConfig(config, await commandLogger(config))
      try {
        if (flags.wait && flags.allowNoProxy !== true) await assertLiveProxy(client, target)
        const handle = await client.enqueue(target, task)
        if (!flags.wait) {
          io.stdout(flags.json === true ? `${JSON.stringify({ queue: handle.queue, jobId: handle.id })}\n` : `enqueued job ${handle.id} in ${handle.queue} (follow it: backup-proxy job follow ${handle.id})\n`)
          return
        }
        io.stderr(`enqueued job ${handle.id} in ${handle.queue}\n`)
        const [{ redactString }, { namesOfTask }, { followJob }] = await Promise.all([import('../../common/redact.js'), import('../job-view.js'), import('../follow.js')])
        await followJob(handle, io, { ...(flags.json === undefined ? {} : { json: flags.json }), label: 'mirror', names: namesOfTask(task, redactString) })
      } finally {
        await client.close()
      }
    })
}

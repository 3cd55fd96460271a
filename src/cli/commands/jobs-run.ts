/**
 * The actions of `jobs` and `job show|follow|logs` (see ./jobs.ts), loaded only when one runs. They read
 * the jobs over one plain Redis connection, as `status` does (../../queue/job-read.ts): BullMQ loads
 * only for `job follow`, which listens to the queue's events.
 */
import type { Command } from 'commander'
import { redactString } from '../../common/redact.js'
import type { Config } from '../../config/index.js'
import { formatDurationMs } from '../../common/units.js'
import { readFinishedSummary, readTaskLog, type JobStore } from '../../queue/job-read.js'
import { createRedis, readyRedis, redisModeError } from '../../queue/redis.js'
import { consolidate, type JobSummary, type TaskSummary } from '../../queue/task-log.js'
import type { CliIo } from '../context.js'
import { commandConfig } from '../context.js'
import { failureOf, followJob, outcomeLine } from '../follow.js'
import { namesOfTask, renderEvent, renderTaskTree } from '../job-view.js'
import { findJob, listJobs, rowOf, type JobRow } from '../jobs-data.js'
import { table } from '../table.js'
import type { JobFlags, JobsFlags } from './jobs.js'

const short = (iso: string | undefined): string => (iso === undefined ? '-' : iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z'))

function formatJobRows(rows: readonly JobRow[]): string {
  if (rows.length === 0) return 'no job\n'
  return `${table([
    ['ID', 'STATUS', 'KIND', 'JOB', 'QUEUE', 'ENQUEUED', 'DURATION', 'RAN BY', 'ERROR'],
    ...rows.map((r) => [
      r.id,
      r.status,
      r.kind,
      r.job === undefined ? '-' : `${r.job.id}${r.scheduleId === undefined ? '' : `/${r.scheduleId}`}`,
      r.queue,
      short(r.enqueuedAt),
      r.durationMs === undefined ? '-' : formatDurationMs(r.durationMs),
      r.ranBy?.split(':')[0] ?? '-',
      r.error === undefined ? '' : r.error.length > 80 ? `${r.error.slice(0, 79)}…` : r.error,
    ]),
  ])}\n`
}

/** One plain Redis connection (no BullMQ), unreachable: E_REDIS naming the URL. */
async function withStore<T>(cmd: Command, redisUrl: string | undefined, fn: (store: JobStore, config: Config) => Promise<T>): Promise<T> {
  const config = await commandConfig(cmd, { redis: { url: redisUrl } })
  const redis = createRedis(config.redis, 'backup-proxy:jobs')
  redis.on('error', () => undefined) // readyRedis reports a failed connection with the URL and the cause
  try {
    return await fn({ prefix: config.redis.prefix, redis: () => readyRedis(redis, config.redis) }, config).catch((error: unknown) => {
      throw redisModeError(error, config.redis) ?? error
    })
  } finally {
    redis.disconnect()
  }
}

export async function runJobs(flags: JobsFlags, cmd: Command, io: CliIo): Promise<void> {
  await withStore(cmd, flags.redisUrl, async (store) => {
    const rows = await listJobs(store, {
      limit: flags.limit,
      ...(flags.state === undefined ? {} : { state: flags.state }),
      ...(flags.proxy === undefined ? {} : { proxy: flags.proxy }),
      ...(flags.pool === undefined ? {} : { pool: flags.pool }),
      ...(flags.job === undefined ? {} : { job: flags.job }),
    })
    io.stdout(flags.json === true ? `${JSON.stringify(rows, null, 2)}\n` : formatJobRows(rows))
  })
}

function header(row: JobRow): string {
  const lines = [
    `job ${row.id} (${row.kind}) in ${row.queue}: ${row.status}`,
    ...(row.job === undefined ? [] : [`  backup job  ${row.job.name ?? row.job.id} (${row.job.id}${row.scheduleId === undefined ? '' : `, schedule ${row.scheduleId}`})`]),
    `  enqueued    ${short(row.enqueuedAt)}`,
    ...(row.startedAt === undefined ? [] : [`  started     ${short(row.startedAt)}`]),
    ...(row.finishedAt === undefined ? [] : [`  finished    ${short(row.finishedAt)}${row.durationMs === undefined ? '' : ` (${formatDurationMs(row.durationMs)})`}`]),
    ...(row.ranBy === undefined ? [] : [`  ran by      ${row.ranBy}`]),
  ]
  return `${lines.join('\n')}\n`
}

export async function runJob(action: 'show' | 'follow' | 'logs', id: string, flags: JobFlags, cmd: Command, io: CliIo): Promise<void> {
  await withStore(cmd, flags.redisUrl, async (store, config) => {
    const { queue, job } = await findJob(store, id, flags)
    // VM and remote names the job's task gives (its remote URLs are sealed at rest: ids only then)
    const names = namesOfTask((job.data as { task?: unknown } | undefined)?.task, redactString)
    if (action === 'follow') {
      const { EnqueueClient } = await import('../../queue/client.js')
      const client = await EnqueueClient.fromConfig(config, undefined, { sealKey: false })
      try {
        const handle = client.handle(queue, id)
        io.stderr(`following job ${id} in ${queue}\n`)
        await followJob(handle, io, { ...(flags.json === undefined ? {} : { json: flags.json }), names, replay: () => handle.taskLog() })
      } finally {
        await client.close()
      }
      return
    }
    const events = await readTaskLog(store, queue, id)
    if (action === 'logs') {
      if (flags.json === true) io.stdout(`${events.map((e) => JSON.stringify(e)).join('\n')}${events.length === 0 ? '' : '\n'}`)
      else {
        const byId = new Map<string, TaskSummary>()
        io.stdout(events.length === 0 ? 'no task-log event yet\n' : `${events.map((e) => renderEvent(e, byId, names)).join('\n')}\n`)
      }
      return
    }
    const row = await rowOf(store, queue, job)
    const finished = row.state === 'completed' || row.state === 'failed'
    const summary: JobSummary | undefined = finished ? await readFinishedSummary(store, queue, id) : undefined
    const tree = summary ?? consolidate(events)[0]
    if (flags.json === true) return void io.stdout(`${JSON.stringify({ ...row, summary: tree ?? null }, null, 2)}\n`)
    io.stdout(header(row))
    if (tree !== undefined) io.stdout(`\n${renderTaskTree(tree, names)}`)
    if (summary !== undefined) {
      io.stdout(`${outcomeLine(summary)}\n`)
      const failure = failureOf(summary)
      if (failure !== undefined) io.stdout(`cause: ${failure.message}\n`)
    }
  })
}

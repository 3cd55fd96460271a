/**
 * The actions of `jobs` and `job show|follow|logs` (see ./jobs.ts), loaded only when one runs.
 */
import type { Command } from 'commander'
import { redactString } from '../../common/redact.js'
import { formatDurationMs } from '../../common/units.js'
import { EnqueueClient } from '../../queue/client.js'
import { redisModeError } from '../../queue/redis.js'
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

async function withClient<T>(cmd: Command, redisUrl: string | undefined, fn: (client: EnqueueClient) => Promise<T>): Promise<T> {
  const config = await commandConfig(cmd, { redis: { url: redisUrl } })
  const client = await EnqueueClient.fromConfig(config, undefined, { sealKey: false })
  try {
    return await fn(client).catch((error: unknown) => {
      throw redisModeError(error, config.redis) ?? error
    })
  } finally {
    await client.close()
  }
}

export async function runJobs(flags: JobsFlags, cmd: Command, io: CliIo): Promise<void> {
  await withClient(cmd, flags.redisUrl, async (client) => {
    const rows = await listJobs(client, {
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
  await withClient(cmd, flags.redisUrl, async (client) => {
    const { queue, job } = await findJob(client, id, flags)
    const handle = client.handle(queue, id)
    // VM and remote names the job's task gives (its remote URLs are sealed at rest: ids only then)
    const names = namesOfTask((job.data as { task?: unknown } | undefined)?.task, redactString)
    if (action === 'follow') {
      io.stderr(`following job ${id} in ${queue}\n`)
      await followJob(handle, io, { ...(flags.json === undefined ? {} : { json: flags.json }), names, replay: () => handle.taskLog() })
      return
    }
    const events = await handle.taskLog()
    if (action === 'logs') {
      if (flags.json === true) io.stdout(`${events.map((e) => JSON.stringify(e)).join('\n')}${events.length === 0 ? '' : '\n'}`)
      else {
        const byId = new Map<string, TaskSummary>()
        io.stdout(events.length === 0 ? 'no task-log event yet\n' : `${events.map((e) => renderEvent(e, byId, names)).join('\n')}\n`)
      }
      return
    }
    const row = await rowOf(client, queue, job)
    const finished = row.state === 'completed' || row.state === 'failed'
    const summary: JobSummary | undefined = finished ? await handle.result() : undefined
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

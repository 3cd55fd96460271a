/**
 * Jobs that stalled too often: a job whose proxy died (SIGKILL, crash, lost Redis) while running it goes
 * back to wait; past `workers.maxStalledCount` such stalls BullMQ fails it on its next pick-up, without
 * calling our processor, with its own text "job stalled more than allowable limit". That failure gets the
 * stable code E_STALLED and a task log: the proxy that sees it writes one root task (start, info, end
 * failure) and the summary to the job log and event stream; a client that reads the job before that
 * (or one whose proxy could not write it) builds the same summary from BullMQ's failed reason.
 */
import type { Job } from 'bullmq'
import type { RedisClient } from './redis.js'
import { BackupProxyError, serializeError, type JsonValue } from '../common/errors.js'
import { newTaskId, type JobSummary, type TaskLogEvent } from './task-log.js'
import { bullKeys } from './names.js'

/** BullMQ's failed reason for a job that stalled more than maxStalledCount times. */
const BULLMQ_STALLED_REASON = 'job stalled more than allowable limit'

export function isStalledFailure(failedReason: string | undefined): boolean {
  return failedReason === BULLMQ_STALLED_REASON
}

/** E_STALLED, with what happened and what to do. */
function stalledError(maxStalledCount?: number): BackupProxyError {
  const limit = maxStalledCount === undefined ? 'workers.maxStalledCount' : `workers.maxStalledCount (${maxStalledCount})`
  return new BackupProxyError(
    'E_STALLED',
    `the job stalled more than ${limit} times: the proxy running it died or lost Redis each time (SIGKILL, crash, out of memory, network), so it is not run again; find out why the proxies stopped (their logs, the OOM killer), then enqueue the job again`,
    { fields: { retryable: false, ...(maxStalledCount === undefined ? {} : { maxStalledCount }) } },
  )
}

/** The events and summary of a stalled-out job: one root task, ended in failure with E_STALLED. */
/** What stalledSummary reads of a job: BullMQ's Job or a job read with plain commands (job-read.ts). */
export interface StalledJob {
  id?: string | undefined
  name: string
  processedOn?: number | undefined
  finishedOn?: number | undefined
  stalledCounter: number
  attemptsStarted: number
}

export function stalledSummary(job: StalledJob, maxStalledCount?: number, ranBy?: string): { events: TaskLogEvent[]; summary: JobSummary } {
  const now = Date.now()
  const id = newTaskId()
  const error = serializeError(stalledError(maxStalledCount))
  const start = job.processedOn ?? now
  const end = job.finishedOn ?? now
  const info = `the job stalled ${job.stalledCounter} times (its proxy stopped while running it): not run again`
  const data: JsonValue = { type: job.name, jobId: job.id ?? null, attempt: job.attemptsStarted, stalledCount: job.stalledCounter }
  const result = error as unknown as JsonValue
  const events: TaskLogEvent[] = [
    { event: 'start', taskId: id, timestamp: start, message: job.name, data },
    { event: 'info', taskId: id, timestamp: end, message: info },
    { event: 'end', taskId: id, timestamp: end, status: 'failure', result },
  ]
  const summary: JobSummary = {
    id,
    message: job.name,
    data,
    start,
    end,
    status: 'failure',
    result,
    infos: [{ message: info }],
    jobId: job.id ?? '',
    kind: job.name,
    error,
    ...(ranBy === undefined ? {} : { ranBy }),
  }
  return { events, summary }
}

/** Writes a stalled-out job's task log and summary (job log + one event-stream entry), as an attempt would. */
export async function recordStalledFailure(redis: RedisClient, prefix: string, job: Job, maxStalledCount: number, ranBy: string): Promise<void> {
  const { events, summary } = stalledSummary(job, maxStalledCount, ranBy)
  const lines = events.map((e) => JSON.stringify(e))
  const keys = bullKeys(prefix, job.queueName)
  await Promise.all([
    redis.rpush(keys.logs(job.id ?? ''), ...lines, JSON.stringify({ summary })),
    redis.xadd(keys.events, 'MAXLEN', '~', '10000', '*', 'event', 'task-log', 'jobId', job.id ?? '', 'data', lines.join('\n')),
  ])
}

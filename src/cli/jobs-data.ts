/**
 * Jobs as `backup-proxy jobs` and `job show|follow|logs` see them: every job BullMQ still keeps in the
 * known queues (completed ones for 7 days, failed for 30, see src/queue/client.ts), with its outcome
 * (the JobSummary status, or the BullMQ state while it is not finished), the backup job and schedule it
 * runs, when it ran, how long, which proxy instance ran it, and its error. Finding a job by id searches
 * every known queue unless `--proxy`/`--pool` names one. All of it is read with plain Redis commands
 * (../queue/job-read.ts), without loading BullMQ: these commands stay cheap to start.
 */
import { BackupProxyError, UsageError } from '../common/errors.js'
import { listStoredJobs, readJob, readJobLogs, readJobState, type JobStore, type ListedState, type StoredJob } from '../queue/job-read.js'
import { summaryFromLogLines, type JobSummary } from '../queue/task-log.js'

const JOB_STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'] as const
const OUTCOMES = ['success', 'failure', 'interrupted', 'skipped'] as const

export interface JobRow {
  id: string
  queue: string
  kind: string
  /** BullMQ's state */
  state: string
  /** the run's outcome when finished, else the state (queued, running, delayed) */
  status: string
  job?: { id: string; name?: string }
  scheduleId?: string
  enqueuedAt: string
  startedAt?: string
  finishedAt?: string
  durationMs?: number
  ranBy?: string
  error?: string
}

interface JobFilter {
  state?: string
  proxy?: string
  pool?: string
  job?: string
  limit: number
}

const iso = (ms: number | undefined): string | undefined => (ms === undefined || ms === 0 ? undefined : new Date(ms).toISOString())

function taskOf(job: StoredJob): { job?: { id?: unknown; name?: unknown }; schedule?: { id?: unknown } } {
  const data = job.data as { task?: unknown } | undefined
  return typeof data?.task === 'object' && data.task !== null ? (data.task) : {}
}

async function summaryOf(store: JobStore, queue: string, job: StoredJob, state: string): Promise<JobSummary | undefined> {
  if (state === 'completed') return (job.returnvalue as JobSummary | null) ?? undefined
  if (state !== 'failed') return undefined
  return summaryFromLogLines(await readJobLogs(store, queue, job.id, 1))
}

export async function rowOf(store: JobStore, queue: string, job: StoredJob): Promise<JobRow> {
  const state = await readJobState(store, queue, job.id)
  const summary = await summaryOf(store, queue, job, state)
  const task = taskOf(job)
  const status = summary?.status ?? (state === 'failed' ? 'failure' : state === 'active' ? 'running' : state === 'waiting' || state === 'prioritized' ? 'queued' : state)
  const errorText = summary?.error === undefined ? (state === 'failed' && job.failedReason ? job.failedReason : undefined) : `${summary.error.code === undefined ? '' : `[${summary.error.code}] `}${summary.error.message}`
  const started = job.processedOn ?? undefined
  const finished = job.finishedOn ?? undefined
  const row: JobRow = { id: job.id, queue, kind: job.name, state, status, enqueuedAt: iso(job.timestamp)! }
  if (typeof task.job?.id === 'string') row.job = { id: task.job.id, ...(typeof task.job.name === 'string' ? { name: task.job.name } : {}) }
  if (typeof task.schedule?.id === 'string') row.scheduleId = task.schedule.id
  if (iso(started) !== undefined) row.startedAt = iso(started)!
  if (iso(finished) !== undefined) row.finishedAt = iso(finished)!
  if (started !== undefined && finished !== undefined) row.durationMs = finished - started
  if (summary?.ranBy !== undefined) row.ranBy = summary.ranBy
  if (errorText !== undefined) row.error = errorText
  return row
}

/** The queues to look in: the one `--proxy`/`--pool` names, else every known queue. */
async function queuesOf(store: JobStore, filter: { proxy?: string; pool?: string }): Promise<string[]> {
  const { queueName } = await import('../queue/names.js')
  if (filter.proxy !== undefined && filter.pool !== undefined) throw new UsageError('give --proxy <id> or --pool <name>, not both')
  if (filter.proxy !== undefined) return [queueName({ proxy: filter.proxy })]
  if (filter.pool !== undefined) return [queueName({ pool: filter.pool })]
  const { knownQueues } = await import('../queue/registry.js')
  return knownQueues(await store.redis(), store.prefix)
}

export async function listJobs(store: JobStore, filter: JobFilter): Promise<JobRow[]> {
  const state = filter.state
  if (state !== undefined && ![...JOB_STATES, ...OUTCOMES, 'queued', 'running'].includes(state)) {
    throw new UsageError(`--state must be one of ${[...JOB_STATES, ...OUTCOMES, 'queued', 'running'].join(', ')}; got "${state}"`)
  }
  const types: ListedState[] = state === undefined || (OUTCOMES as readonly string[]).includes(state) ? [...JOB_STATES] : state === 'queued' ? ['waiting', 'prioritized'] : state === 'running' ? ['active'] : [state as ListedState]
  const rows: JobRow[] = []
  for (const queue of await queuesOf(store, filter)) {
    // newest first; when filtering by backup job or outcome, look further back than the limit
    const window = filter.job === undefined && (state === undefined || !(OUTCOMES as readonly string[]).includes(state)) ? filter.limit : filter.limit * 20
    for (const job of await listStoredJobs(store, queue, types, window)) {
      const row = await rowOf(store, queue, job)
      if (filter.job !== undefined && row.job?.id !== filter.job) continue
      if (state !== undefined && (OUTCOMES as readonly string[]).includes(state) && row.status !== state) continue
      rows.push(row)
    }
  }
  return rows.sort((a, b) => b.enqueuedAt.localeCompare(a.enqueuedAt)).slice(0, filter.limit)
}

/** The queue holding job `id`; E_USAGE (exit 2) naming where it looked when none does. */
export async function findJob(store: JobStore, id: string, filter: { proxy?: string; pool?: string }): Promise<{ queue: string; job: StoredJob }> {
  const queues = await queuesOf(store, filter)
  for (const queue of queues) {
    const job = await readJob(store, queue, id)
    if (job !== undefined) return { queue, job }
  }
  throw new BackupProxyError('E_USAGE', `job ${id} not found in ${queues.length === 0 ? 'any queue (none is known yet)' : queues.join(', ')}; list jobs with backup-proxy jobs (finished jobs are kept 7 days, failed ones 30)`)
}

/**
 * BullMQ's jobs read with plain Redis commands: a job's hash, its state, its log, the newest jobs of a
 * queue in given states. `backup-proxy jobs` and `job show|logs` only read, and BullMQ costs ~200
 * modules to load (with pino, ~0.11 s of the 0.39 s CPU `jobs` took, BENCHMARKS.md "cli start"): like
 * `status` (./status.ts), they read BullMQ's keys themselves. The keys come from BullMQ's own QueueKeys
 * (bullKeys), and each read does what BullMQ's does (Job.fromId and its field decoding, the getStateV2
 * script, getJobLogs, getJobs newest first skipping ids whose hash is gone); test/queue/job-read.test.ts
 * checks them against a real BullMQ Queue. Nothing here writes.
 */
import { bullKeys } from './names.js'
import type { RedisClient } from './redis.js'
import { isStalledFailure, stalledSummary } from './stalled.js'
import { BackupProxyError, CancelledError, serializeError } from '../common/errors.js'
import { eventsInSummary, parseTaskLogLines, summaryFromLogLines, type JobSummary, type TaskLogEvent } from './task-log.js'

/** Where the jobs are: a Redis connection and BullMQ's prefix (config redis.prefix). */
export interface JobStore {
  redis(): Promise<RedisClient>
  prefix: string
}

/** The fields of a BullMQ job the CLI reads, decoded as BullMQ's Job.fromId decodes them. */
export interface StoredJob {
  id: string
  name: string
  data: unknown
  timestamp: number
  processedOn?: number
  finishedOn?: number
  failedReason?: string
  /** the processor's return value (JSON), null when there is none */
  returnvalue: unknown
  attemptsStarted: number
  stalledCounter: number
}

/** BullMQ's job states (Job.getState), 'unknown' when the job is in none of them. */
export type StoredJobState = 'completed' | 'failed' | 'delayed' | 'prioritized' | 'active' | 'waiting' | 'waiting-children' | 'unknown'

/** The job states getJobs lists (BullMQ's names; `waiting` is the wait list). */
export type ListedState = 'waiting' | 'prioritized' | 'delayed' | 'active' | 'completed' | 'failed'

const LISTS = new Set(['wait', 'paused', 'active'])
/** getJobs' bound on reading further to replace ids whose hash is gone (GET_JOBS_MAX_BACKFILL_ITERATIONS) */
const MAX_BACKFILL = 5

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined // BullMQ logs "corrupted returnvalue" and leaves it undefined
  }
}

/** A job hash (HGETALL) decoded like BullMQ's rawToJobJson + Job.fromJSON; undefined when empty. */
function decodeJob(id: string, raw: Record<string, string>): StoredJob | undefined {
  if (Object.keys(raw).length === 0) return undefined
  const job: StoredJob = {
    id: raw.id || id,
    name: raw.name!,
    data: JSON.parse(raw.data || '{}') as unknown,
    timestamp: parseInt(raw.timestamp!),
    returnvalue: typeof raw.returnvalue === 'string' ? parseJson(raw.returnvalue) : null,
    attemptsStarted: parseInt(raw.ats || '0'),
    stalledCounter: parseInt(raw.stc || '0'),
  }
  if (raw.processedOn) job.processedOn = parseInt(raw.processedOn)
  if (raw.finishedOn) job.finishedOn = parseInt(raw.finishedOn)
  if (raw.failedReason) job.failedReason = raw.failedReason
  return job
}

export async function readJob(store: JobStore, queue: string, id: string): Promise<StoredJob | undefined> {
  const redis = await store.redis()
  return decodeJob(id, await redis.hgetall(bullKeys(store.prefix, queue).job(id)))
}

/**
 * The state of a job, in one transaction, as BullMQ's getStateV2 script finds it: the first of completed,
 * failed, delayed, prioritized (sorted sets), active, wait, paused (lists: LPOS, Redis ≥ 6.0.6, else the
 * lists are read whole as BullMQ's older script does), waiting-children that holds it.
 */
export async function readJobState(store: JobStore, queue: string, id: string): Promise<StoredJobState> {
  const redis = await store.redis()
  const key = bullKeys(store.prefix, queue).job // BullMQ's toKey: `<prefix>:<queue>:<name>`, a job's or a state's
  const read = async (lpos: boolean): Promise<unknown[]> => {
    const m = redis.multi().zscore(key('completed'), id).zscore(key('failed'), id).zscore(key('delayed'), id).zscore(key('prioritized'), id)
    for (const list of ['active', 'wait', 'paused']) {
      if (lpos) m.lpos(key(list), id)
      else m.lrange(key(list), 0, -1)
    }
    const replies = (await m.zscore(key('waiting-children'), id).exec()) ?? []
    return replies.map(([error, value]) => {
      if (error !== null) throw error
      return value
    })
  }
  const found = await read(true).then(
    (r) => r.map((v) => v !== null),
    async (error: unknown) => {
      if (!/unknown command|EXECABORT/i.test(String((error as Error | undefined)?.message))) throw error
      return (await read(false)).map((v) => (Array.isArray(v) ? v.includes(id) : v !== null))
    },
  )
  const states: StoredJobState[] = ['completed', 'failed', 'delayed', 'prioritized', 'active', 'waiting', 'waiting', 'waiting-children']
  return states[found.indexOf(true)] ?? 'unknown'
}

/** Lines of a job's log: all of them, or the last `last` (BullMQ's getJobLogs, oldest first). */
export async function readJobLogs(store: JobStore, queue: string, id: string, last?: number): Promise<string[]> {
  const redis = await store.redis()
  return redis.lrange(bullKeys(store.prefix, queue).logs(id), last === undefined ? 0 : -last, -1)
}

/**
 * The newest jobs of a queue in the given states, `count` per state, in the order of `states` (a job in
 * two of them once), as BullMQ's `queue.getJobs(states, 0, count - 1, false)` returns them: lists from
 * their head, sorted sets highest score first, ids whose hash is gone skipped and replaced by the next.
 */
export async function listStoredJobs(store: JobStore, queue: string, states: readonly ListedState[], count: number): Promise<StoredJob[]> {
  const redis = await store.redis()
  const keys = bullKeys(store.prefix, queue)
  const seen = new Set<string>()
  const out: StoredJob[] = []
  for (const type of new Set(states.map((s) => (s === 'waiting' ? 'wait' : s)))) {
    const key = keys.job(type)
    const jobs: StoredJob[] = []
    for (let cursor = 0, i = 0; jobs.length < count && i < MAX_BACKFILL; i++) {
      const end = cursor + count - jobs.length - 1
      const ids = LISTS.has(type) ? await redis.lrange(key, cursor, end) : await redis.zrevrange(key, cursor, end)
      if (ids.length === 0) break
      const hashes = await Promise.all(ids.map((id) => redis.hgetall(keys.job(id))))
      ids.forEach((id, n) => {
        const job = decodeJob(id, hashes[n]!)
        if (job !== undefined) jobs.push(job)
      })
      cursor += ids.length
    }
    for (const job of jobs) {
      if (seen.has(job.id)) continue
      seen.add(job.id)
      out.push(job)
    }
  }
  return out
}

/** The task-log events of a job so far: its log, then those a completed job's summary carries. */
export async function readTaskLog(store: JobStore, queue: string, id: string): Promise<TaskLogEvent[]> {
  const [logs, job] = await Promise.all([readJobLogs(store, queue, id), readJob(store, queue, id)])
  return [...parseTaskLogLines(logs), ...eventsInSummary(job?.returnvalue)]
}

/**
 * The summary of a job in a final state (or gone): a completed job's return value, a failed one's summary
 * line in its log, else one built from BullMQ's failed reason (E_STALLED for a stalled-out job, E_BACKUP
 * otherwise); a job removed before it ran ends as interrupted. Undefined while the job is not finished.
 * `job` is read after `state` (readFinishedSummary), so a completed job's hash holds its return value.
 */
async function finishedSummary(jobId: string, job: StoredJob | undefined, state: StoredJobState, logs: () => Promise<string[]>): Promise<JobSummary | undefined> {
  if (job === undefined) {
    const now = Date.now()
    return { jobId, kind: 'unknown', id: jobId, message: 'unknown', start: now, end: now, status: 'interrupted', error: serializeError(new CancelledError('the job was removed from the queue before it ran')) }
  }
  if (state === 'completed') return (job.returnvalue as JobSummary | null) ?? undefined
  if (state !== 'failed') return undefined
  const summary = summaryFromLogLines(await logs())
  if (summary !== undefined) return summary
  if (isStalledFailure(job.failedReason)) return stalledSummary(job).summary
  const now = Date.now()
  const error = serializeError(new BackupProxyError('E_BACKUP', job.failedReason || 'the job failed'))
  return { jobId, kind: job.name, id: jobId, message: job.name, start: job.processedOn ?? now, end: job.finishedOn ?? now, status: 'failure', error }
}

/**
 * The summary of job `id` if it is finished (see finishedSummary), read now: its state first, then its
 * hash (one BullMQ script writes both, so a final state means a final hash; read the other way round, a
 * job completing in between looked completed without its result).
 */
export async function readFinishedSummary(store: JobStore, queue: string, id: string): Promise<JobSummary | undefined> {
  const state = await readJobState(store, queue, id)
  const job = state === 'unknown' ? undefined : await readJob(store, queue, id)
  return finishedSummary(id, job, state, () => readJobLogs(store, queue, id))
}

/**
 * One job attempt on the main thread: the BullMQ processor every queue of a proxy runs.
 *
 * Order: honour a cancel requested before pick-up → start the root task of the task log → open the sealed
 * fields and validate the task (E_TASK_INVALID → failed, no retry) → run the registered processor with
 * a JobContext → end the root task → return the consolidated `JobSummary` (completed) or append it to the
 * job log and throw (failed; retried only for transient errors).
 *
 * Interruptions: an operator cancel or the job's timeout ends the job as `interrupted` with
 * E_CANCELLED / E_TIMEOUT, no retry; the BullMQ job completes (its summary says interrupted): it is
 * not a failure. A proxy shutdown past its grace period instead puts the job back in
 * `wait` (not counted as a failed attempt) so another proxy, or this one restarted, runs it again; so
 * does a lost lock (the job is left to the worker that holds it). An abort that arrives once the
 * processor's work is done (it returns success or skipped: e.g. the cancel came after the last VM
 * finished) does not change that outcome: the log notes it.
 *
 * Task-log events are written in order by one writer: each is appended to the job log (durable) and
 * published on the queue's event stream (live, for QueueEvents listeners), one stream entry per flush.
 * An attempt that succeeds before its first flush (TASK_LOG_FLUSH_MS) and whose summary tree determines
 * its events exactly (`eventsOfTree`) writes none: the summary, stored by BullMQ with the completion
 * itself, carries them (`taskLogInSummary`), and the client rebuilds them from it. Failures, retries,
 * interruptions and longer attempts are written as they happen.
 */
import type { RedisClient as Redis } from '../queue/redis.js'
import { UnrecoverableError, WaitingError, type Job } from 'bullmq'
import { BackupProxyError, CancelledError, TimeoutError, errorCode, serializeError, toError, type JsonValue, type SerializedError } from '../common/errors.js'
import type { Logger } from '../common/log.js'
import type { Config } from '../config/index.js'
import type { JobProgress, QueuedJobData } from '../queue/client.js'
import { bullKeys, queueKeys } from '../queue/names.js'
import { unsealFields, type SealKey } from '../queue/seal.js'
import { consolidate, eventsOfTree, LogTask, newTaskId, type JobSummary, type TaskLogEvent, type TaskStatus } from '../queue/task-log.js'
import { isTaskKind, parseTask, SECRET_PATHS, type Task, type TaskKind, type TaskOf } from '../queue/tasks.js'
import type { StreamPool } from './pool.js'
import type { JobContext, JobInfo, ProcessorRegistry } from './processors.js'
import type { TaskLogFlusher } from './task-log-flusher.js'

/** Codes never worth a retry: the same input would fail the same way. */
const NON_RETRYABLE_CODES = new Set(['E_TASK_INVALID', 'E_CANCELLED', 'E_CONFIG_INVALID', 'E_REMOTE_URL', 'E_ENCRYPTION', 'E_ENCRYPTED_RANGE', 'E_VHD_UNSUPPORTED', 'E_DUPLICATE_JOB', 'E_NOT_AVAILABLE', 'EACCES'])
const AUTH_XAPI_CODES = new Set(['SESSION_AUTHENTICATION_FAILED', 'PERMISSION_DENIED', 'RBAC_PERMISSION_DENIED'])

export function isRetryable(error: unknown): boolean {
  const code = errorCode(error)
  if (code !== undefined && NON_RETRYABLE_CODES.has(code)) return false
  if (error instanceof BackupProxyError) {
    if (error.fields.retryable === false) return false
    const xapiCode = error.fields.xapiCode
    if (typeof xapiCode === 'string' && AUTH_XAPI_CODES.has(xapiCode)) return false
  }
  return true
}

/** Why a job's signal aborted; `shutdown` and `lock-lost` leave the job to be run again. */
export type AbortCause = 'cancel' | 'timeout' | 'shutdown' | 'lock-lost'

export class JobAbort extends CancelledError {
  constructor(
    readonly cause_: AbortCause,
    message: string,
  ) {
    super(message, { fields: { abortCause: cause_ } })
  }
}

export interface ActiveJob {
  job: Job<QueuedJobData, JobSummary>
  queue: string
  kind: string
  abort: (cause: AbortCause, message: string) => void
  /** performance.now() when the job's lock was last known held (pick-up, then each renewal) */
  lockedAt: number
}

export interface RunJobDeps {
  config: Config
  processors: ProcessorRegistry
  sealKey: SealKey
  pool: () => StreamPool
  redis: Redis
  logger: Logger
  instance: string
  active: Map<string, ActiveJob>
  /** the runtime's task-log flush timer */
  flusher: TaskLogFlusher
}

/** Job log lines kept per job (BullMQ's keepLogs of the client's jobs). */
const KEEP_LOG_LINES = 5000

/**
 * Writes task-log events in order: each is a job log line, and each flush is ONE `task-log` entry on the
 * queue's event stream carrying its lines joined by "\n" (JSON never contains a raw newline; the client
 * splits them). Events are batched for up to TASK_LOG_FLUSH_MS (the runtime's TaskLogFlusher); `flush()` writes
 * what is pending now.
 *
 * Commands go to the runtime's auto-pipelined connection: RPUSH + LTRIM + XADD of one flush, and those of
 * every other job flushing in the same tick, leave in one socket write. The first flush also reads the
 * job's cancel flag (a cancel requested between the client's state check and its control message), so
 * that check costs no round trip of its own; it happens at most TASK_LOG_FLUSH_MS after the start.
 */
class TaskLogWriter {
  #pending: string[] = []
  /** performance.now() of the oldest pending line, while it waits for the flush ticker */
  waitingSince = 0
  #chain: Promise<void> = Promise.resolve()
  #warned = false
  #cancelChecked = false

  constructor(
    private readonly redis: Redis,
    private readonly keys: { logs: string; events: string; cancelFlag: string },
    private readonly jobId: string,
    private readonly logger: () => Logger,
    private readonly onCancelFlag: (reason: string) => void,
    private readonly flusher: TaskLogFlusher,
  ) {}

  write(line: string): void {
    if (this.#pending.push(line) === 1) {
      this.waitingSince = performance.now()
      this.flusher.schedule(this)
    }
  }

  /**
   * When nothing was written yet and the pending lines are exactly the events of `eventsJson` (a JSON
   * array), drops them and returns true (the caller records them elsewhere); otherwise changes nothing
   * and returns false.
   */
  dropIfExactly(eventsJson: string): boolean {
    if (this.#cancelChecked || eventsJson !== `[${this.#pending.join(',')}]`) return false
    this.flusher.forget(this)
    this.#pending = []
    return true
  }

  #drain(): Promise<void> {
    this.flusher.forget(this)
    const lines = this.#pending
    this.#pending = []
    if (lines.length === 0) return this.#chain
    // the first drain: from now on, lines are in Redis (dropIfExactly refuses)
    const checkCancel = !this.#cancelChecked
    this.#cancelChecked = true
    this.#chain = this.#chain.then(async () => {
      const { redis, keys } = this
      const writes = [
        redis.rpush(keys.logs, ...lines),
        redis.ltrim(keys.logs, -KEEP_LOG_LINES, -1),
        redis.xadd(keys.events, 'MAXLEN', '~', '10000', '*', 'event', 'task-log', 'jobId', this.jobId, 'data', lines.join('\n')),
      ]
      const flag = checkCancel ? redis.get(keys.cancelFlag) : undefined
      const results = await Promise.allSettled([...writes, flag ?? Promise.resolve(null)])
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
      if (failed !== undefined) {
        if (!this.#warned) this.logger().warn({ err: failed.reason as unknown, jobId: this.jobId }, 'could not record task-log events (or check for a pending cancel) in Redis')
        this.#warned = true
      }
      const last = results[results.length - 1]
      if (checkCancel && last?.status === 'fulfilled' && typeof last.value === 'string') this.onCancelFlag(last.value)
    })
    return this.#chain
  }

  /** Writes pending events now and waits until everything written so far is in Redis. */
  async flush(): Promise<void> {
    await this.#drain()
  }
}

/** The coded error a processor put in its result (`result.error`) when it ended in failure without throwing. */
function errorInResult(result: JsonValue | undefined): SerializedError | undefined {
  const e = typeof result === 'object' && result !== null && !Array.isArray(result) ? result.error : undefined
  if (typeof e !== 'object' || e === null || Array.isArray(e)) return undefined
  return typeof e.code === 'string' && typeof e.message === 'string' ? (e as unknown as SerializedError) : undefined
}

function statusOf(error: unknown): TaskStatus {
  return errorCode(error) === 'E_CANCELLED' || errorCode(error) === 'E_TIMEOUT' ? 'interrupted' : 'failure'
}

function rootData(task: unknown, kind: string, job: Job, instance: string): JsonValue {
  const t = task as Partial<Task> & { job?: { id?: string; name?: string; mode?: string }; schedule?: { id?: string } }
  return {
    type: kind,
    jobId: job.id ?? null,
    ...(t.job?.id === undefined ? {} : { backupJobId: t.job.id, jobName: t.job.name ?? '', mode: t.job.mode ?? null }),
    ...(t.schedule?.id === undefined ? {} : { scheduleId: t.schedule.id }),
    proxy: instance,
    attempt: job.attemptsStarted,
  }
}

/**
 * What a job attempt makes on first use: a short job that logs nothing at its level and whose processor
 * never looks at its signal builds neither a child logger nor an AbortController.
 */
class JobState {
  #controller: AbortController | undefined
  #logger: Logger | undefined
  cause: AbortCause | undefined
  reason: Error | undefined

  constructor(
    private readonly parentLogger: Logger,
    private readonly job: Job,
  ) {}

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController()
      if (this.reason !== undefined) this.#controller.abort(this.reason)
    }
    return this.#controller.signal
  }

  get logger(): Logger {
    const { job } = this
    return (this.#logger ??= this.parentLogger.child({ queue: job.queueName, jobId: job.id, kind: job.name, attempt: job.attemptsStarted }))
  }

  /** The first abort wins. */
  abort(cause: AbortCause, message: string): void {
    if (this.reason !== undefined) return
    this.cause = cause
    this.reason = cause === 'timeout' ? new TimeoutError(message) : new JobAbort(cause, message)
    this.#controller?.abort(this.reason)
  }
}

/** The JobContext a processor gets (a class: its lazy members live on the prototype, not per object). */
class RunContext implements JobContext<TaskKind> {
  readonly #state: JobState

  constructor(
    readonly task: TaskOf<TaskKind>,
    readonly job: JobInfo,
    readonly root: LogTask,
    readonly log: (event: TaskLogEvent) => void,
    readonly progress: (progress: JobProgress) => void,
    readonly config: Config,
    readonly pool: StreamPool,
    readonly instance: string,
    state: JobState,
  ) {
    this.#state = state
  }

  get signal(): AbortSignal {
    return this.#state.signal
  }

  get logger(): Logger {
    return this.#state.logger
  }
}

/** The BullMQ processor: one attempt of one job. */
export async function runJob(deps: RunJobDeps, job: Job<QueuedJobData, JobSummary>, token: string | undefined): Promise<JobSummary> {
  const { config, redis, instance } = deps
  const queue = job.queueName
  const jobId = job.id ?? ''
  const kind = job.name
  const state = new JobState(deps.logger, job)
  const logger = () => state.logger
  const infoEnabled = deps.logger.isLevelEnabled('info')
  const abort = (cause: AbortCause, message: string) => state.abort(cause, message)
  deps.active.set(jobId, { job, queue, kind, abort, lockedAt: performance.now() })
  const bull = bullKeys(config.redis.prefix, queue)
  const keys = { logs: bull.logs(jobId), events: bull.events, cancelFlag: queueKeys.cancelFlag(config.redis.prefix, queue, jobId) }
  const writer = new TaskLogWriter(redis, keys, jobId, logger, (reason) => abort('cancel', reason), deps.flusher)
  const events: TaskLogEvent[] = []
  const emit = (event: TaskLogEvent) => {
    events.push(event)
    writer.write(JSON.stringify(event))
  }
  const root = new LogTask(emit, newTaskId())
  const data = job.data as Partial<QueuedJobData> | undefined
  emit({ event: 'start', taskId: root.id, timestamp: Date.now(), message: kind, data: rootData(data?.task, kind, job, instance) })
  let timer: NodeJS.Timeout | undefined
  let status: TaskStatus
  let result: JsonValue | undefined
  let failure: unknown
  let finished = false
  try {
    if (!isTaskKind(kind)) throw new BackupProxyError('E_TASK_INVALID', `kind: unknown task kind "${kind}"`, { fields: { field: 'kind' } })
    if (data?.v !== 1 || typeof data.task !== 'object') throw new BackupProxyError('E_TASK_INVALID', 'job data is not a backup-proxy task (enqueue it with the EnqueueClient)', { fields: { field: '(task)' } })
    const task = parseTask(unsealFields(data.task, SECRET_PATHS[kind], deps.sealKey))
    if (task.kind !== kind) throw new BackupProxyError('E_TASK_INVALID', `kind: job name "${kind}" does not match the task kind "${task.kind}"`, { fields: { field: 'kind' } })
    const processor = deps.processors.get(kind)
    if (processor === undefined) {
      throw new BackupProxyError('E_NOT_AVAILABLE', `this proxy (${instance}) has no processor for ${kind} tasks; known: ${deps.processors.kinds().join(', ') || 'none'}`, { fields: { kind } })
    }
    const timeoutMs = task.kind === 'backup.run' ? (task.job.settings['']?.timeout ?? config.backup.timeoutMs) : 0
    if (timeoutMs > 0) timer = setTimeout(() => abort('timeout', `the run exceeded its timeout of ${timeoutMs} ms`), timeoutMs)
    const ctx = new RunContext(
      task,
      { id: jobId, queue, attempt: job.attemptsStarted, isRetry: job.attemptsStarted > 1 || job.stalledCounter > 0, enqueuedAt: data.enqueuedAt ?? job.timestamp },
      root,
      emit,
      (p: JobProgress) => {
        job.updateProgress(p as unknown as Record<string, JsonValue>).catch((error: unknown) => logger().debug({ err: error }, 'progress update failed'))
      },
      config,
      deps.pool(),
      instance,
      state,
    )
    if (infoEnabled) logger().info('job started')
    const outcome = await processor(ctx)
    status = outcome.status
    result = outcome.result
    // the processor says its work is done: a cancel, timeout or shutdown that came after that (e.g. after
    // the last VM finished) does not undo it
    finished = status === 'success' || status === 'skipped'
  } catch (error) {
    failure = state.reason !== undefined && errorCode(error) !== 'E_TASK_INVALID' ? state.reason : error
    status = statusOf(failure)
    result = serializeError(failure) as unknown as JsonValue
  } finally {
    clearTimeout(timer)
    deps.active.delete(jobId)
  }

  // shutdown before the work was done, or lost lock (the job is no longer ours to finish): give it back,
  // it has not failed
  const abortCause = state.cause
  const abortReason = state.reason
  if ((abortCause === 'shutdown' && !finished) || abortCause === 'lock-lost') {
    root.info(abortCause === 'shutdown' ? 'interrupted by proxy shutdown; the job goes back to the queue' : 'lost the job lock; another proxy runs it')
    root.end('interrupted', serializeError(failure ?? abortReason) as unknown as JsonValue)
    await writer.flush()
    if (abortCause === 'shutdown' && token !== undefined) {
      await job.moveToWait(token)
      logger().warn('job interrupted by shutdown and put back in the queue')
    }
    throw new WaitingError()
  }

  if (finished && abortReason !== undefined) root.info(`${abortReason.message}: requested after the work was done, the run's outcome stands`, { abortCause: abortCause ?? null })
  root.end(status, result)
  const [tree] = consolidate(events)
  let error: SerializedError | undefined
  if (failure !== undefined) error = serializeError(failure)
  else if (status === 'interrupted' && abortReason !== undefined) error = serializeError(abortReason)
  else if (status === 'failure') error = errorInResult(result) ?? serializeError(new BackupProxyError('E_BACKUP', `${kind} ended in failure: see its task log`))
  // consolidate's fresh root object becomes the summary (no copy)
  const summary = tree as JobSummary
  summary.jobId = jobId
  summary.kind = kind
  summary.ranBy = instance
  if (error !== undefined) summary.error = error
  // an operator's cancel or the run's timeout (interrupted) is an outcome, not a failure: the job completes
  // with its summary (status interrupted, E_CANCELLED / E_TIMEOUT), so the queue's failed count and the
  // failing-jobs alert do not count it
  if (status === 'success' || status === 'skipped' || status === 'interrupted') {
    // a short attempt: its events are in the summary BullMQ stores with the completion (no write of ours)
    const inTree = eventsOfTree(summary)
    if (inTree !== undefined && writer.dropIfExactly(JSON.stringify(inTree))) summary.taskLogInSummary = true
    else await writer.flush()
    if (infoEnabled) logger().info({ status }, 'job finished')
    return summary
  }
  writer.write(JSON.stringify({ summary }))
  await writer.flush()
  const err = failure === undefined ? new BackupProxyError('E_BACKUP', error!.message) : toError(failure)
  const message = `[${errorCode(err) ?? 'E_INTERNAL'}] ${err.message}`
  const retry = failure !== undefined && status === 'failure' && isRetryable(failure)
  logger().warn({ status, err, retry }, 'job failed')
  // the summary rides on the error (not enumerable, never serialized) for the per-job metrics (partial runs)
  const thrown = retry ? new Error(message) : new UnrecoverableError(message)
  Object.defineProperty(thrown, 'jobSummary', { value: summary, enumerable: false })
  throw thrown
}

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
import { consolidate, createTaskLog, eventsOfTree, type LogTask, type JobSummary, type TaskLogEvent, type TaskStatus } from '../queue/task-log.js'
import { isTaskKind, parseTask, SECRET_PATHS, type Task, type TaskKind, type TaskOf } from '../queue/tasks.js'
import type { StreamPool } from './pool.js'
import type { JobContext, JobInfo, ProcessorRegistry } from './processors.js'
import type { TaskLogFlusher } from './task-log-flusher.js'
import { TaskLogWriter } from './task-log-writer.js'

/** Codes never worth a retry: the same input would fail the same way. */
const NON_RETRYABLE_CODES = new Set(['E_TASK_INVALID', 'E_CANCELLED', 'E_CONFIG_INVALID', 'E_REMOTE_URL', 'E_ENCRYPTION', 'E_ENCRYPTED_RANGE', 'E_VHD_UNSUPPORTED', 'E_DUPLICATE_JOB', 'E_NOT_AVAILABLE', 'EACCES'])
const AUTH_XAPI_CODES = new Set(['SESSION_AUTHENTICATION_FAILED', 'PERMISSION_DENIED', 'RBAC_PERMISSION_DENIED'])

function isRetryable(error: unknown): boolean {
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
type AbortCause = 'cancel' | 'timeout' | 'shutdown' | 'lock-lost'

class JobAbort extends CancelledError {
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

/** One attempt's task log: every event in order (for the summary), the writer, the root task. */
interface AttemptLog {
  readonly events: TaskLogEvent[]
  readonly emit: (event: TaskLogEvent) => void
  readonly writer: TaskLogWriter
  readonly root: LogTask
}

/** What the processor step ended with. */
interface AttemptOutcome {
  status: TaskStatus
  result: JsonValue | undefined
  /** the error that ended the attempt (the abort's reason when the job was aborted) */
  failure: unknown
  /** the processor said its work is done (success or skipped): a later abort does not undo it */
  finished: boolean
}

/** Step 1: the task log, its writer (the job's cancel flag aborts the attempt) and the root task's start. */
function openAttemptLog(deps: RunJobDeps, job: Job<QueuedJobData, JobSummary>, state: JobState): AttemptLog {
  const { config } = deps
  const jobId = job.id ?? ''
  const bull = bullKeys(config.redis.prefix, job.queueName)
  const keys = { logs: bull.logs(jobId), events: bull.events, cancelFlag: queueKeys.cancelFlag(config.redis.prefix, job.queueName, jobId) }
  const writer = new TaskLogWriter(deps.redis, keys, jobId, () => state.logger, (reason) => state.abort('cancel', reason), deps.flusher)
  const events: TaskLogEvent[] = []
  const emit = (event: TaskLogEvent) => {
    events.push(event)
    writer.write(JSON.stringify(event))
  }
  const data = job.data as Partial<QueuedJobData> | undefined
  const root = createTaskLog(job.name, rootData(data?.task, job.name, job, deps.instance), emit)
  return { events, emit, writer, root }
}

/** Step 2: the job's task, unsealed and validated, and its processor (E_TASK_INVALID, E_NOT_AVAILABLE). */
function prepareTask(deps: RunJobDeps, job: Job<QueuedJobData, JobSummary>): { task: Task; processor: NonNullable<ReturnType<ProcessorRegistry['get']>>; enqueuedAt: number } {
  const kind = job.name
  if (!isTaskKind(kind)) throw new BackupProxyError('E_TASK_INVALID', `kind: unknown task kind "${kind}"`, { fields: { field: 'kind' } })
  const data = job.data as Partial<QueuedJobData> | undefined
  if (data?.v !== 1 || typeof data.task !== 'object') throw new BackupProxyError('E_TASK_INVALID', 'job data is not a backup-proxy task (enqueue it with the EnqueueClient)', { fields: { field: '(task)' } })
  const task = parseTask(unsealFields(data.task, SECRET_PATHS[kind], deps.sealKey))
  if (task.kind !== kind) throw new BackupProxyError('E_TASK_INVALID', `kind: job name "${kind}" does not match the task kind "${task.kind}"`, { fields: { field: 'kind' } })
  const processor = deps.processors.get(kind)
  if (processor === undefined) {
    throw new BackupProxyError('E_NOT_AVAILABLE', `this proxy (${deps.instance}) has no processor for ${kind} tasks; known: ${deps.processors.kinds().join(', ') || 'none'}`, { fields: { kind } })
  }
  return { task, processor, enqueuedAt: data.enqueuedAt ?? job.timestamp }
}

/** Step 3: runs the processor under the run's timeout; an error (or the abort behind it) becomes the outcome. */
async function runProcessor(deps: RunJobDeps, job: Job<QueuedJobData, JobSummary>, state: JobState, log: AttemptLog): Promise<AttemptOutcome> {
  let timer: NodeJS.Timeout | undefined
  try {
    const { task, processor, enqueuedAt } = prepareTask(deps, job)
    const timeoutMs = task.kind === 'backup.run' ? (task.job.settings['']?.timeout ?? deps.config.backup.timeoutMs) : 0
    if (timeoutMs > 0) timer = setTimeout(() => state.abort('timeout', `the run exceeded its timeout of ${timeoutMs} ms`), timeoutMs)
    const info: JobInfo = { id: job.id ?? '', queue: job.queueName, attempt: job.attemptsStarted, isRetry: job.attemptsStarted > 1 || job.stalledCounter > 0, enqueuedAt }
    const progress = (p: JobProgress) => {
      job.updateProgress(p as unknown as Record<string, JsonValue>).catch((error: unknown) => state.logger.debug({ err: error }, 'progress update failed'))
    }
    const ctx = new RunContext(task, info, log.root, log.emit, progress, deps.config, deps.pool(), deps.instance, state)
    if (deps.logger.isLevelEnabled('info')) state.logger.info('job started')
    const { status, result } = await processor(ctx)
    // the processor says its work is done: a cancel, timeout or shutdown that came after that (e.g. after
    // the last VM finished) does not undo it
    return { status, result, failure: undefined, finished: status === 'success' || status === 'skipped' }
  } catch (error) {
    const failure = state.reason !== undefined && errorCode(error) !== 'E_TASK_INVALID' ? state.reason : error
    return { status: statusOf(failure), result: serializeError(failure) as unknown as JsonValue, failure, finished: false }
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Step 4a: shutdown before the work was done, or a lost lock (the job is no longer ours to finish): the
 * job goes back to the queue (shutdown) or is left to its new owner; it has not failed.
 */
async function handBack(job: Job<QueuedJobData, JobSummary>, token: string | undefined, state: JobState, log: AttemptLog, failure: unknown): Promise<never> {
  const cause = state.cause
  log.root.info(cause === 'shutdown' ? 'interrupted by proxy shutdown; the job goes back to the queue' : 'lost the job lock; another proxy runs it')
  log.root.end('interrupted', serializeError(failure ?? state.reason) as unknown as JsonValue)
  await log.writer.flush()
  if (cause === 'shutdown' && token !== undefined) {
    await job.moveToWait(token)
    state.logger.warn('job interrupted by shutdown and put back in the queue')
  }
  throw new WaitingError()
}

/** Step 4b: ends the root task and builds the job's summary (the consolidated tree, the error). */
function summarize(job: Job<QueuedJobData, JobSummary>, instance: string, state: JobState, log: AttemptLog, outcome: AttemptOutcome): JobSummary {
  const { status, result, failure, finished } = outcome
  const abortReason = state.reason
  if (finished && abortReason !== undefined) log.root.info(`${abortReason.message}: requested after the work was done, the run's outcome stands`, { abortCause: state.cause ?? null })
  log.root.end(status, result)
  const [tree] = consolidate(log.events)
  let error: SerializedError | undefined
  if (failure !== undefined) error = serializeError(failure)
  else if (status === 'interrupted' && abortReason !== undefined) error = serializeError(abortReason)
  else if (status === 'failure') error = errorInResult(result) ?? serializeError(new BackupProxyError('E_BACKUP', `${job.name} ended in failure: see its task log`))
  // consolidate's fresh root object becomes the summary (no copy)
  const summary = tree as JobSummary
  summary.jobId = job.id ?? ''
  summary.kind = job.name
  summary.ranBy = instance
  if (error !== undefined) summary.error = error
  return summary
}

/**
 * Step 5: an outcome that is not a failure completes the job with its summary — an operator's cancel or
 * the run's timeout (interrupted) included, so the queue's failed count and the failing-jobs alert do
 * not count it. A failure appends the summary to the job log and throws (retried when transient).
 */
async function settle(state: JobState, log: AttemptLog, outcome: AttemptOutcome, summary: JobSummary, infoEnabled: boolean): Promise<JobSummary> {
  const { status, failure } = outcome
  if (status === 'success' || status === 'skipped' || status === 'interrupted') {
    // a short attempt: its events are in the summary BullMQ stores with the completion (no write of ours)
    const inTree = eventsOfTree(summary)
    if (inTree !== undefined && log.writer.dropIfExactly(JSON.stringify(inTree))) summary.taskLogInSummary = true
    else await log.writer.flush()
    if (infoEnabled) state.logger.info({ status }, 'job finished')
    return summary
  }
  log.writer.write(JSON.stringify({ summary }))
  await log.writer.flush()
  const err = failure === undefined ? new BackupProxyError('E_BACKUP', summary.error?.message ?? 'the job failed') : toError(failure)
  const message = `[${errorCode(err) ?? 'E_INTERNAL'}] ${err.message}`
  const retry = failure !== undefined && status === 'failure' && isRetryable(failure)
  state.logger.warn({ status, err, retry }, 'job failed')
  // the summary rides on the error (not enumerable, never serialized) for the per-job metrics (partial runs)
  const thrown = retry ? new Error(message) : new UnrecoverableError(message)
  Object.defineProperty(thrown, 'jobSummary', { value: summary, enumerable: false })
  throw thrown
}

/** The BullMQ processor: one attempt of one job. */
export async function runJob(deps: RunJobDeps, job: Job<QueuedJobData, JobSummary>, token: string | undefined): Promise<JobSummary> {
  const jobId = job.id ?? ''
  const state = new JobState(deps.logger, job)
  const abort = (cause: AbortCause, message: string) => state.abort(cause, message)
  deps.active.set(jobId, { job, queue: job.queueName, kind: job.name, abort, lockedAt: performance.now() })
  const log = openAttemptLog(deps, job, state)
  let outcome: AttemptOutcome
  try {
    outcome = await runProcessor(deps, job, state, log)
  } finally {
    deps.active.delete(jobId)
  }
  if ((state.cause === 'shutdown' && !outcome.finished) || state.cause === 'lock-lost') return handBack(job, token, state, log, outcome.failure)
  const summary = summarize(job, deps.instance, state, log, outcome)
  return settle(state, log, outcome, summary, deps.logger.isLevelEnabled('info'))
}

/**
 * Processors: what a proxy does for each task kind. The backup engine registers `backup.run` (and
 * `backup.verify`, `backup.restore`, `remote.*`) in builtin-processors.ts; the worker looks them up by the
 * job's kind and calls them with a `JobContext`:
 *
 *   - `task`: the parsed task, secrets unsealed (never log it whole: use the logger, which redacts)
 *   - `signal`: aborts on cancel (client or CLI), shutdown past the grace period, the job's `timeout`
 *     setting, or loss of the job lock; `signal.reason` is a CancelledError / TimeoutError
 *   - `root`: the run's root task in the XO task log (`root.child(...)`, `info`, `warning`); the worker
 *     starts and ends it, a processor adds children
 *   - `log(event)`: a raw task-log event, `progress(p)`: job progress
 *   - `pool`: the stream pool (`pool.run('backup.disk', input, { signal, onProgress, onMetrics })`)
 *   - `job`: id, queue, attempt, `enqueuedAt`; `isRetry` says a previous attempt started: a retried
 *     backup run does not back a VM up twice when that attempt already published it (backup/earlier-attempt.ts);
 *     what an attempt left half done is removed by the next run (cleanLeftovers in backup/vm-backup.ts)
 *
 * A processor returns a `TaskResult` (`status` + JSON `result`). Returning `failure` ends the job failed
 * without retry (the processor already retried what it could: nRetriesVmBackupFailures); throwing
 * retries transient errors with backoff, and never retries E_TASK_INVALID, E_CANCELLED, auth failures
 * or errors whose `fields.retryable` is false.
 */
import type { Logger } from '../common/log.js'
import type { Config } from '../config/index.js'
import type { JobProgress } from '../queue/client.js'
import type { LogTask, TaskLogEvent, TaskResult } from '../queue/task-log.js'
import type { TaskKind, TaskOf } from '../queue/tasks.js'
import type { StreamPool } from './pool.js'

export interface JobInfo {
  id: string
  queue: string
  /** 1 for the first run; counts runs started by any proxy (crash recovery and retries included) */
  attempt: number
  /** a previous attempt started (failed, crashed or was interrupted): clean up what it left */
  isRetry: boolean
  enqueuedAt: number
}

export interface JobContext<K extends TaskKind> {
  task: TaskOf<K>
  job: JobInfo
  signal: AbortSignal
  root: LogTask
  log: (event: TaskLogEvent) => void
  progress: (progress: JobProgress) => void
  logger: Logger
  config: Config
  pool: StreamPool
  /** proxy instance running the job */
  instance: string
}

export type Processor<K extends TaskKind> = (ctx: JobContext<K>) => Promise<TaskResult>

type AnyProcessor = (ctx: JobContext<TaskKind>) => Promise<TaskResult>

export class ProcessorRegistry {
  readonly #processors = new Map<TaskKind, AnyProcessor>()

  /** Registers (or replaces) the processor of a kind. */
  register<K extends TaskKind>(kind: K, processor: Processor<K>): this {
    this.#processors.set(kind, processor as unknown as AnyProcessor)
    return this
  }

  get(kind: TaskKind): AnyProcessor | undefined {
    return this.#processors.get(kind)
  }

  kinds(): TaskKind[] {
    return [...this.#processors.keys()]
  }
}

/**
 * The enqueue client: the library an orchestrator (or the CLI) uses to hand tasks to proxies.
 *
 * `enqueue(target, task, options)` validates the task (parseTask → E_TASK_INVALID naming the field),
 * seals its secrets, and adds it to the proxy's or pool's queue with retries/backoff, priority and delay.
 * A `backup.run` gets the deduplication key `backup.run:<jobId>:<scheduleId>`: while a job with that key
 * is waiting, delayed or active in the queue, enqueueing it again fails with E_DUPLICATE_JOB (it is
 * accepted again once the previous one finished). The returned `JobHandle` follows the job: progress,
 * task-log events (live through QueueEvents, or after the fact from the job log), the final `JobSummary`,
 * and `cancel()`.
 *
 * Cancel: a waiting/delayed job is removed (its handle resolves as interrupted/E_CANCELLED); a running one
 * gets a flag key (read with the job's first task-log write, so a job picked up meanwhile sees it) and a message on the queue's control channel that
 * the proxy running it turns into an AbortSignal; the job then ends as interrupted with E_CANCELLED.
 */
import { EventEmitter } from 'node:events'
import type { Job, JobsOptions, Queue, QueueEvents } from 'bullmq'
import { BackupProxyError, CancelledError, deserializeError, type JsonValue } from '../common/errors.js'
import { silentLogger, type Logger } from '../common/log.js'
import type { Config } from '../config/index.js'
import { bullmq } from './libs.js'
import { bullKeys, queueKeys, queueName, type QueueTarget } from './names.js'
import { BullConnection, createRedis, logConnectionErrors, readyRedis, redisModeError, type RedisClient, type RedisConfig } from './redis.js'
import { rememberQueue, publishScale, type ScaleRequest } from './registry.js'
import { loadSealKey, sealFields, type SealKey } from './seal.js'
import { readFinishedSummary, readTaskLog } from './job-read.js'
import { eventsInSummary, newTaskId, parseTaskLogLines, type JobSummary, type TaskLogEvent } from './task-log.js'
import { parseTask, SECRET_PATHS, type Task, type TaskInput } from './tasks.js'

/** Progress a processor reports (all optional but `percent`). */
export interface JobProgress {
  percent: number
  doneBytes?: number
  totalBytes?: number
  message?: string
}

/** The job data at rest: the task with its secret fields sealed. */
export interface QueuedJobData {
  v: 1
  task: Record<string, unknown>
  dedupKey?: string
  enqueuedAt: number
}

export interface EnqueueOptions {
  /** 1 (highest) .. 2_097_152; unset = normal FIFO */
  priority?: number
  /** start no earlier than this many ms from now */
  delayMs?: number
  /** attempts for transient failures (default config workers.attempts) */
  attempts?: number
  /** first retry delay, doubling (default config workers.backoffMs) */
  backoffMs?: number
}

export interface EnqueueClientOptions {
  redis: RedisConfig
  /** required to enqueue (secrets are sealed); not needed to follow, cancel or inspect jobs */
  sealKey?: SealKey
  attempts?: number
  backoffMs?: number
  logger?: Logger
}

export type CancelOutcome = 'removed' | 'signalled' | 'finished' | 'not-found'

/** Builds the deduplication key of a task, when its kind has one. */
export function dedupKeyOf(task: Task): string | undefined {
  // an XO job (VM, mirror or metadata backup) never runs twice at once for a schedule
  return task.kind === 'backup.run' || task.kind === 'backup.mirror' || task.kind === 'backup.metadata' ? `backup.run:${task.job.id}:${task.schedule.id}` : undefined
}

function jobIdFor(task: Task): string {
  const suffix = newTaskId()
  return task.kind === 'backup.run' ? `run.${task.job.id}.${task.schedule.id}.${suffix}` : `${task.kind}.${suffix}`
}

export class EnqueueClient {
  readonly prefix: string
  readonly #redis: RedisClient
  readonly #redisConfig: RedisConfig
  readonly #bull: BullConnection
  readonly #sealKey: SealKey | undefined
  readonly #queues = new Map<string, Queue>()
  readonly #remembered = new Set<string>()
  readonly #events = new Map<string, Promise<QueueEvents>>()
  readonly #defaults: { attempts: number; backoffMs: number }
  readonly #logger: Logger
  #closed = false

  constructor(options: EnqueueClientOptions) {
    this.#redisConfig = options.redis
    this.prefix = options.redis.prefix
    this.#redis = createRedis(options.redis, 'backup-proxy:client')
    this.#bull = new BullConnection(options.redis, 'backup-proxy:client:bullmq')
    this.#sealKey = options.sealKey
    this.#defaults = { attempts: options.attempts ?? 3, backoffMs: options.backoffMs ?? 10_000 }
    this.#logger = options.logger ?? silentLogger
    logConnectionErrors(this.#redis, this.#logger, 'client')
  }

  /**
   * A client configured like a proxy: redis, seal key, attempts and backoff from `config`. With
   * `sealKey: false` no key is loaded (follow, cancel, status only).
   */
  static async fromConfig(config: Config, logger?: Logger, options: { sealKey?: boolean } = {}): Promise<EnqueueClient> {
    return new EnqueueClient({
      redis: config.redis,
      ...(options.sealKey === false ? {} : { sealKey: await loadSealKey(config) }),
      attempts: config.workers.attempts,
      backoffMs: config.workers.backoffMs,
      ...(logger === undefined ? {} : { logger }),
    })
  }

  /** Our own connection (registry, cancel flags), connected on first use; unreachable: E_REDIS naming the URL. */
  async redis(): Promise<RedisClient> {
    return readyRedis(this.#redis, this.#redisConfig)
  }

  queue(name: string): Queue {
    let q = this.#queues.get(name)
    if (q === undefined) {
      q = new (bullmq().Queue)(name, { connection: this.#bull.connection, prefix: this.prefix })
      q.on('error', (error) => this.#logger.warn({ err: error, queue: name }, 'queue connection error (BullMQ reconnects)'))
      this.#queues.set(name, q)
    }
    return q
  }

  /** QueueEvents of a queue, reading from the stream's current end (no event after this call is missed). */
  async events(name: string): Promise<QueueEvents> {
    let p = this.#events.get(name)
    if (p === undefined) {
      p = (async () => {
        const redis = await this.redis()
        const last = await redis.xrevrange(bullKeys(this.prefix, name).events, '+', '-', 'COUNT', 1)
        const qe = new (bullmq().QueueEvents)(name, { connection: this.#bull.connection, prefix: this.prefix, lastEventId: last[0]?.[0] ?? '0-0' })
        qe.on('error', (error) => this.#logger.warn({ err: error, queue: name }, 'queue events connection error (will reconnect)'))
        await qe.waitUntilReady()
        return qe
      })()
      this.#events.set(name, p)
    }
    return p
  }

  /**
   * Validates, seals and enqueues a task for a proxy or a pool. Throws TaskInvalidError (E_TASK_INVALID)
   * before anything reaches Redis when the task is invalid, and E_DUPLICATE_JOB when the same backup job
   * and schedule is already waiting or running in that queue.
   */
  async enqueue(target: QueueTarget, input: TaskInput, options: EnqueueOptions = {}): Promise<JobHandle> {
    if (this.#closed) throw new BackupProxyError('E_INTERNAL', 'EnqueueClient is closed')
    const task = parseTask(input)
    const name = queueName(target)
    validateOptions(options)
    if (this.#sealKey === undefined) throw new BackupProxyError('E_CONFIG_INVALID', 'this EnqueueClient has no seal key: it cannot enqueue (set security.sealKeyFile)')
    const sealed = sealFields(task as unknown as Record<string, unknown>, SECRET_PATHS[task.kind], this.#sealKey, { inPlace: true })
    const dedupKey = dedupKeyOf(task)
    const jobId = jobIdFor(task)
    const data: QueuedJobData = { v: 1, task: sealed, enqueuedAt: Date.now(), ...(dedupKey === undefined ? {} : { dedupKey }) }
    const backoffMs = options.backoffMs ?? this.#defaults.backoffMs
    const opts: JobsOptions = {
      jobId,
      attempts: options.attempts ?? this.#defaults.attempts,
      backoff: { type: 'exponential', delay: backoffMs },
      removeOnComplete: { age: 7 * 86400, count: 1000 },
      removeOnFail: { age: 30 * 86400, count: 5000 },
      keepLogs: 5000,
      ...(options.priority === undefined ? {} : { priority: options.priority }),
      ...(options.delayMs === undefined || options.delayMs === 0 ? {} : { delay: options.delayMs }),
      ...(dedupKey === undefined ? {} : { deduplication: { id: dedupKey } }),
    }
    let job: Job
    try {
      if (!this.#remembered.has(name)) {
        await rememberQueue(await this.redis(), this.prefix, name)
        this.#remembered.add(name)
      }
      job = await this.queue(name).add(task.kind, data, opts)
    } catch (error) {
      throw redisModeError(error, this.#redisConfig) ?? error
    }
    if (job.id !== jobId) {
      throw new BackupProxyError(
        'E_DUPLICATE_JOB',
        `backup job "${dedupKeyOf(task)?.split(':')[1]}" schedule "${dedupKeyOf(task)?.split(':')[2]}" is already queued or running in ${name} as job ${job.id}; wait for it or cancel it (backup-proxy cancel ${job.id} ${'proxy' in target && target.proxy !== undefined ? `--proxy ${target.proxy}` : `--pool ${target.pool}`})`,
        { fields: { queue: name, existingJobId: job.id ?? null, dedupKey: dedupKey ?? null } },
      )
    }
    if (this.#logger.isLevelEnabled('debug')) this.#logger.debug({ queue: name, jobId, kind: task.kind }, 'task enqueued')
    return new JobHandle(this, name, jobId)
  }

  /** A handle on an existing job (to follow or cancel it). */
  handle(target: QueueTarget | string, jobId: string): JobHandle {
    return new JobHandle(this, typeof target === 'string' ? target : queueName(target), jobId)
  }

  /** Cancels a job: removes it when not started, else signals the proxy running it. */
  async cancel(target: QueueTarget | string, jobId: string, reason = 'cancelled by the operator'): Promise<CancelOutcome> {
    const name = typeof target === 'string' ? target : queueName(target)
    const redis = await this.redis()
    const job = await bullmq().Job.fromId(this.queue(name), jobId)
    if (job === undefined) return 'not-found'
    const flag = queueKeys.cancelFlag(this.prefix, name, jobId)
    await redis.set(flag, reason, 'EX', 86400)
    const state = await job.getState()
    if (state === 'completed' || state === 'failed') {
      await redis.del(flag)
      return 'finished'
    }
    if (state !== 'active') {
      try {
        await job.remove()
        await redis.del(flag)
        return 'removed'
      } catch (error) {
        // it became active (locked) meanwhile: signal the proxy running it instead
        this.#logger.debug({ err: error, jobId }, 'job could not be removed, signalling its proxy')
      }
    }
    await redis.publish(queueKeys.control(this.prefix, name), JSON.stringify({ type: 'cancel', jobId, reason }))
    return 'signalled'
  }

  /** Asks live proxies to change their thread count or concurrency; returns how many instances heard it. */
  async scale(request: ScaleRequest): Promise<number> {
    return publishScale(await this.redis(), this.prefix, request)
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const events = await Promise.allSettled(this.#events.values())
    await Promise.all([
      ...[...this.#queues.values()].map((q) => q.close()),
      ...events.map((e) => (e.status === 'fulfilled' ? e.value.close() : Promise.resolve())),
    ])
    await this.#bull.close()
    this.#redis.disconnect()
  }
}

function validateOptions(options: EnqueueOptions): void {
  if (options.priority === undefined && options.delayMs === undefined && options.attempts === undefined && options.backoffMs === undefined) return
  const check = (name: string, v: number | undefined, min: number, max: number) => {
    if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) {
      throw new BackupProxyError('E_USAGE', `${name} must be a whole number from ${min} to ${max}, got ${v}`, { fields: { field: name } })
    }
  }
  check('priority', options.priority, 1, 2_097_152)
  check('delayMs', options.delayMs, 0, 365 * 86400_000)
  check('attempts', options.attempts, 1, 100)
  check('backoffMs', options.backoffMs, 0, 86400_000)
}

/** QueueEvents emits per-job events (`completed:<id>`, custom `task-log:<id>`) its typings do not list. */
function emitterOf(qe: QueueEvents): EventEmitter {
  return qe
}

/**
 * Follows one job. Listeners receive events from the moment they are attached (those of a short attempt
 * arrive with its completion); taskLog() gives the past.
 */
export class JobHandle {
  #subscribed: Promise<void> | undefined
  // made when a listener is first attached: most handles (enqueue's return value) are never listened to
  #emitter: EventEmitter | undefined
  #unsubscribe: (() => void) | undefined

  constructor(
    readonly client: EnqueueClient,
    readonly queue: string,
    readonly id: string,
  ) {}

  /** Calls `listener` with each progress report; returns a function that stops it. */
  onProgress(listener: (progress: JobProgress) => void): () => void {
    this.#subscribe()
    this.#local().on('progress', listener)
    return () => void this.#local().off('progress', listener)
  }

  /** Calls `listener` with each task-log event as it happens; returns a function that stops it. */
  onTaskLog(listener: (event: TaskLogEvent) => void): () => void {
    this.#subscribe()
    this.#local().on('task-log', listener)
    return () => void this.#local().off('task-log', listener)
  }

  #local(): EventEmitter {
    return (this.#emitter ??= new EventEmitter())
  }

  #subscribe(): void {
    this.#subscribed ??= (async () => {
      const qe = emitterOf(await this.client.events(this.queue))
      const onProgress = (args: { data: unknown }) => this.#local().emit('progress', args.data)
      const onTaskLog = (args: { data?: unknown }) => {
        if (typeof args.data !== 'string') return
        // one stream entry carries the events of one flush, one JSON line each
        for (const event of parseTaskLogLines(args.data.split('\n'))) this.#local().emit('task-log', event)
      }
      // a short attempt's events come with its completion (its summary carries them, none were written)
      const onCompleted = (args: { returnvalue?: unknown }) => {
        for (const event of eventsInSummary(args.returnvalue)) this.#local().emit('task-log', event)
      }
      qe.on(`progress:${this.id}`, onProgress)
      qe.on(`task-log:${this.id}`, onTaskLog)
      qe.on(`completed:${this.id}`, onCompleted)
      this.#unsubscribe = () => {
        qe.off(`progress:${this.id}`, onProgress)
        qe.off(`task-log:${this.id}`, onTaskLog)
        qe.off(`completed:${this.id}`, onCompleted)
      }
    })()
    // a failure to subscribe surfaces in ready() and result(); nothing to do here
    this.#subscribed.catch(() => undefined)
  }

  /** Resolves once live listeners are attached (useful before starting to watch). */
  async ready(): Promise<void> {
    this.#subscribe()
    await this.#subscribed
  }

  /** Stops live events. */
  stop(): void {
    this.#unsubscribe?.()
  }

  async state(): Promise<string> {
    const job = await bullmq().Job.fromId(this.client.queue(this.queue), this.id)
    return job === undefined ? 'not-found' : job.getState()
  }

  /**
   * Task-log events recorded so far: the job log, then those a completed job's summary carries (a short
   * last attempt writes none to the log: `taskLogInSummary`).
   */
  async taskLog(): Promise<TaskLogEvent[]> {
    return readTaskLog(this.client, this.queue, this.id)
  }

  /**
   * Waits for the end of the job (after its retries) and resolves with its summary whatever the outcome:
   * check `status` (success | failure | interrupted | skipped) and `error`. Rejects only when Redis fails
   * or `signal` aborts the wait (the job itself keeps running).
   */
  async result(signal?: AbortSignal): Promise<JobSummary> {
    const qe = emitterOf(await this.client.events(this.queue))
    return new Promise<JobSummary>((resolve, reject) => {
      let settled = false
      const cleanup = () => {
        settled = true
        qe.off(`completed:${this.id}`, check)
        qe.off(`failed:${this.id}`, check)
        qe.off(`removed:${this.id}`, check)
        signal?.removeEventListener('abort', onAbort)
      }
      const onAbort = () => {
        cleanup()
        reject(signal?.reason instanceof Error ? signal.reason : new CancelledError('stopped waiting for the job'))
      }
      const check = () => {
        if (settled) return
        void (async () => {
          const summary = await readFinishedSummary(this.client, this.queue, this.id)
          if (summary !== undefined && !settled) {
            cleanup()
            resolve(summary)
          }
        })().catch((error: unknown) => {
          if (settled) return
          cleanup()
          reject(error instanceof Error ? error : deserializeError(error))
        })
      }
      qe.on(`completed:${this.id}`, check)
      qe.on(`failed:${this.id}`, check)
      qe.on(`removed:${this.id}`, check)
      if (signal !== undefined) {
        if (signal.aborted) return onAbort()
        signal.addEventListener('abort', onAbort, { once: true })
      }
      check()
    })
  }

  /** Cancels the job (see EnqueueClient.cancel). */
  async cancel(reason?: string): Promise<CancelOutcome> {
    return this.client.cancel(this.queue, this.id, reason)
  }

  /** Convenience: JSON view for CLIs. */
  toJSON(): Record<string, JsonValue> {
    return { queue: this.queue, id: this.id }
  }
}

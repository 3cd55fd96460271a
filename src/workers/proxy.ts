/**
 * A running proxy: one BullMQ Worker per queue it serves (`{proxy.<id>}` and each `{pool.<name>}`), the
 * stream pool, the control channels, and the heartbeat `status` reads.
 *
 * - Start: refuses Redis unless its maxmemory-policy is `noeviction`, then starts the pool and workers.
 * - Locks: BullMQ renews job locks on a main-thread timer (lockDurationMs / 2); streams run in threads,
 *   so a long disk export never starves lock renewal. A proxy killed with SIGKILL stops renewing: after
 *   lockDurationMs the stalled checker of any live worker puts the job back in wait (maxStalledCount).
 *   A renewal that finds the lock gone or owned by another worker (this proxy was cut off from Redis
 *   longer than lockDurationMs, or stalled that long) aborts the job (`lock-lost`): its streams stop and
 *   clean up instead of writing on while another proxy runs the job again; the attempt is not recorded
 *   as finished (the lock is no longer ours to release). So does a job whose lock was not renewed for
 *   lockDurationMs (Redis unreachable): its lock has expired by then, another proxy may have it.
 * - Cancel: the queue's control channel carries `{type:'cancel', jobId}`; the instance running the job
 *   aborts its signal. A flag key covers a job picked up between the client's check and the message.
 * - Scale: `scale({threads, concurrency})` (SIGHUP reload or a message on the `{bp}:scale` channel)
 *   resizes the thread pool and each Worker's concurrency live; running jobs are untouched.
 * - Shutdown: `shutdown()` stops taking jobs, lets running ones finish within the grace period, then
 *   cancels them cooperatively (their jobs go back to wait), closes workers and pool, removes the
 *   heartbeat; nothing stays locked. `shutdown({ force: true })` (second signal) skips the grace period.
 */
import { jobOutcome } from '../metrics/job-outcome.js'
import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { WaitingError, Worker, type Job } from 'bullmq'
import { BackupProxyError, toError } from '../common/errors.js'
import type { Logger } from '../common/log.js'
import type { Config } from '../config/index.js'
import { VERSION } from '../version.js'
import type { QueuedJobData } from '../queue/client.js'
import { poolQueue, proxyQueue, queueKeys, registryKeys } from '../queue/names.js'
import { BullConnection, checkRedis, createRedis, duplicateRedis, logConnectionErrors, type RedisClient } from '../queue/redis.js'
import { HEARTBEAT_INTERVAL_MS, removeHeartbeat, scaleRequestSchema, writeHeartbeat, type ProxyHeartbeat } from '../queue/registry.js'
import type { SealKey } from '../queue/seal.js'
import { isStalledFailure, recordStalledFailure } from '../queue/stalled.js'
import type { JobSummary } from '../queue/task-log.js'
import type { MetricDelta } from './messages.js'
import { StreamPool, type PoolStats } from './pool.js'
import type { ProcessorRegistry } from './processors.js'
import { runJob, type ActiveJob, type RunJobDeps as JobDeps } from './run-job.js'
import { RedisLossWatch } from './redis-loss-watch.js'
import { TaskLogFlusher } from './task-log-flusher.js'
import { xapiClosesSettled } from '../backup/xapi-closes.js'

interface ProxyRuntimeOptions {
  config: Config
  processors: ProcessorRegistry
  sealKey: SealKey
  logger: Logger
  /** receives metric deltas from stream threads (the metrics registry) */
  onMetrics?: (deltas: MetricDelta[]) => void
  /** job lifecycle hook for metrics: called when an attempt ends */
  onJobEnd?: (info: { kind: string; status: string; durationSeconds: number; errorCode?: string; backup?: { job: string; schedule: string } }) => void
  heartbeatIntervalMs?: number
}

interface ScaleSettings {
  threads?: number
  concurrency?: number
}

export class ProxyRuntime {
  readonly instance: string
  readonly queues: string[]
  #config: Config
  readonly #opts: ProxyRuntimeOptions
  readonly #logger: Logger
  readonly #redis: RedisClient
  readonly #bull: BullConnection
  #subscriber: RedisClient | undefined
  #pool: StreamPool | undefined
  readonly #workers: Worker<QueuedJobData, JobSummary>[] = []
  readonly #active = new Map<string, ActiveJob>()
  /** flushes the task logs of this runtime's jobs (one timer; nothing shared with other runtimes) */
  readonly #flusher = new TaskLogFlusher()
  #heartbeat: NodeJS.Timeout | undefined
  #lockWatch: NodeJS.Timeout | undefined
  #state: 'new' | 'running' | 'draining' | 'stopped' = 'new'
  #shutdown: Promise<void> | undefined
  #starting: Promise<void> | undefined
  #forced = false
  readonly #startedAt = Date.now()

  constructor(options: ProxyRuntimeOptions) {
    this.#opts = options
    this.#config = options.config
    this.instance = `${options.config.proxy.id}@${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`
    this.queues = [proxyQueue(options.config.proxy.id), ...options.config.proxy.pools.map((p) => poolQueue(p))]
    this.#logger = options.logger.child({ proxy: options.config.proxy.id })
    this.#redis = createRedis(options.config.redis, `backup-proxy:${this.instance}`, { autoPipelining: true })
    this.#bull = new BullConnection(options.config.redis, `backup-proxy:${this.instance}:bullmq`)
    logConnectionErrors(this.#redis, this.#logger, 'proxy')
  }

  get state(): 'new' | 'running' | 'draining' | 'stopped' {
    return this.#state
  }

  get pool(): StreamPool {
    if (this.#pool === undefined) throw new BackupProxyError('E_INTERNAL', 'the proxy is not started')
    return this.#pool
  }

  /** Stream pool occupancy, undefined before start (for metrics). */
  poolStats(): PoolStats | undefined {
    return this.#pool?.stats
  }

  get activeJobs(): number {
    return this.#active.size
  }

  /** For readiness and metrics: the BullMQ queues' Redis connection client of this runtime. */
  get redis(): RedisClient {
    return this.#redis
  }

  /**
   * Checks Redis, starts the pool and the control channel, then (only then) the queue workers. A failed
   * check leaves nothing running; a shutdown requested meanwhile is honoured before any job is taken.
   */
  async start(): Promise<void> {
    if (this.#state !== 'new' || this.#starting !== undefined) throw new BackupProxyError('E_INTERNAL', 'a ProxyRuntime starts once')
    this.#starting = this.#start()
    return this.#starting
  }

  async #start(): Promise<void> {
    const { config } = this
    try {
      await checkRedis(this.#redis, config.redis)
      this.#pool = new StreamPool({ threads: config.workers.threads, logger: this.#logger, ...(this.#opts.onMetrics === undefined ? {} : { onMetrics: this.#opts.onMetrics }) })
      await this.#subscribe()
      if (this.#shutdown !== undefined) throw new BackupProxyError('E_CANCELLED', 'the proxy was asked to stop while starting: no job was taken')
    } catch (error) {
      await this.#pool?.close()
      this.#subscriber?.disconnect()
      this.#redis.disconnect()
      this.#state = 'stopped'
      throw error
    }
    const deps: JobDeps = {
      config,
      processors: this.#opts.processors,
      sealKey: this.#opts.sealKey,
      pool: () => this.pool,
      redis: this.#redis,
      logger: this.#logger,
      instance: this.instance,
      active: this.#active,
      flusher: this.#flusher,
    }
    for (const name of this.queues) this.#workers.push(this.#createWorker(name, deps))
    for (const w of this.#workers) {
      w.run().catch((error: unknown) => this.#logger.error({ err: error }, 'queue worker stopped with an error'))
    }
    await Promise.all(this.#workers.map((w) => w.waitUntilReady()))
    this.#state = 'running'
    await this.#beat()
    this.#heartbeat = setInterval(() => void this.#beat(), this.#opts.heartbeatIntervalMs ?? HEARTBEAT_INTERVAL_MS)
    this.#heartbeat.unref()
    this.#lockWatch = setInterval(() => this.#checkLocks(), Math.max(100, Math.floor(config.workers.lockDurationMs / 8)))
    this.#lockWatch.unref()
    this.#logger.info({ instance: this.instance, queues: this.queues, threads: config.workers.threads, concurrency: config.workers.concurrency }, 'proxy serving')
  }

  get config(): Config {
    return this.#config
  }

  /** The BullMQ Worker of one queue (not running yet), its lock and failure events wired to this runtime. */
  #createWorker(name: string, deps: JobDeps): Worker<QueuedJobData, JobSummary> {
    const { config } = this
    const worker = new Worker<QueuedJobData, JobSummary>(name, (job, token) => this.#process(deps, job, token), {
      connection: this.#bull.connection,
      prefix: config.redis.prefix,
      concurrency: config.workers.concurrency,
      lockDuration: config.workers.lockDurationMs,
      stalledInterval: config.workers.stalledIntervalMs,
      maxStalledCount: config.workers.maxStalledCount,
      name: this.instance,
      autorun: false,
    })
    worker.on('error', (error) => this.#logger.error({ err: error, queue: name }, 'queue worker error (BullMQ reconnects and retries)'))
    worker.on('lockRenewalFailed', (jobIds: string[]) => this.#lockLost(name, jobIds))
    worker.on('locksRenewed', ({ jobIds }: { jobIds: string[] }) => {
      const now = performance.now()
      for (const jobId of jobIds) {
        const active = this.#active.get(jobId)
        if (active?.queue === name) active.lockedAt = now
      }
    })
    worker.on('failed', (job, error) => {
      if (job === undefined) return
      if (isStalledFailure(job.failedReason)) return this.#stalledOut(job)
      this.#logger.debug({ queue: name, jobId: job.id, err: error }, 'job attempt failed')
    })
    return worker
  }

  /** One job attempt (the Workers' processor): runJob, and its outcome reported to onJobEnd. */
  async #process(deps: JobDeps, job: Job<QueuedJobData, JobSummary>, token: string | undefined): Promise<JobSummary> {
    if (this.#shutdown !== undefined) {
      // fetched while the proxy began stopping: hand it back untouched
      if (token !== undefined) await job.moveToWait(token)
      throw new WaitingError()
    }
    const t0 = performance.now()
    let status = 'success'
    let summary: JobSummary | undefined
    try {
      summary = await runJob(deps, job, token)
      // success, skipped, or interrupted (cancel, timeout): counted as such, never as a failure
      status = summary.status === 'pending' ? 'interrupted' : summary.status
      return summary
    } catch (error) {
      status = toError(error).name === 'WaitingError' ? 'requeued' : 'failure'
      summary = (error as { jobSummary?: JobSummary } | undefined)?.jobSummary
      throw error
    } finally {
      // cancelled / partial, and the backup job and schedule, for the per-job metrics
      this.#opts.onJobEnd?.({ kind: job.name, durationSeconds: (performance.now() - t0) / 1000, ...jobOutcome(job.name, status, summary, job.data) })
    }
  }


  async #subscribe(): Promise<void> {
    const sub = duplicateRedis(this.#redis)
    this.#subscriber = sub
    sub.on('error', (error: Error) => this.#logger.warn({ err: error }, 'control channel connection error (reconnecting)'))
    const prefix = this.config.redis.prefix
    const channels = [...this.queues.map((q) => queueKeys.control(prefix, q)), registryKeys.scale(prefix)]
    sub.on('message', (channel: string, text: string) => {
      try {
        const message = JSON.parse(text) as unknown
        if (channel === registryKeys.scale(prefix)) return this.#onScaleMessage(message)
        const m = message as { type?: unknown; jobId?: unknown; reason?: unknown }
        if (m.type === 'cancel' && typeof m.jobId === 'string') {
          const active = this.#active.get(m.jobId)
          if (active !== undefined) {
            this.#logger.info({ jobId: m.jobId }, 'cancel requested')
            active.abort('cancel', typeof m.reason === 'string' ? m.reason : 'cancelled')
          }
        }
      } catch (error) {
        this.#logger.warn({ err: error, channel }, 'ignored a malformed control message')
      }
    })
    await sub.subscribe(...channels)
  }

  /** A job BullMQ failed for stalling more than maxStalledCount times (our processor never ran): E_STALLED. */
  #stalledOut(job: Job<QueuedJobData, JobSummary>): void {
    const { maxStalledCount } = this.config.workers
    this.#logger.error({ queue: job.queueName, jobId: job.id, stalledCount: job.stalledCounter, maxStalledCount }, 'job failed with E_STALLED: it stalled more than maxStalledCount times')
    this.#opts.onJobEnd?.({ kind: job.name, status: 'failure', durationSeconds: 0, errorCode: 'E_STALLED' })
    recordStalledFailure(this.#redis, this.config.redis.prefix, job, maxStalledCount, this.instance).catch((error: unknown) =>
      this.#logger.warn({ err: error, jobId: job.id }, 'could not record the task log of a stalled job'),
    )
  }

  /** Jobs whose lock renewal failed: someone else may run them now, stop ours. */
  #lockLost(queue: string, jobIds: readonly string[]): void {
    for (const jobId of jobIds) {
      const active = this.#active.get(jobId)
      if (active === undefined || active.queue !== queue) continue
      this.#logger.warn({ queue, jobId }, 'lost the job lock (renewal refused): stopping the job, another proxy may run it')
      active.abort('lock-lost', 'the job lock was lost (this proxy could not renew it in time); the job is left to the proxy that holds it now')
    }
  }

  /** Jobs whose lock was not renewed for lockDurationMs: it has expired (it was set before we heard of it). */
  #checkLocks(): void {
    const expired = performance.now() - this.config.workers.lockDurationMs
    for (const [jobId, active] of this.#active) {
      if (active.lockedAt >= expired) continue
      this.#logger.warn({ queue: active.queue, jobId }, 'job lock not renewed in time (Redis unreachable?): stopping the job, another proxy may run it')
      active.abort('lock-lost', `the job lock expired: not renewed for ${this.config.workers.lockDurationMs} ms (Redis unreachable?); another proxy may run the job`)
    }
  }

  #onScaleMessage(message: unknown): void {
    const r = scaleRequestSchema.safeParse(message)
    if (!r.success) {
      this.#logger.warn({ issues: r.error.issues.map((i) => i.message) }, 'ignored an invalid scale message')
      return
    }
    if (r.data.instance !== undefined ? r.data.instance !== this.instance : r.data.proxyId !== this.config.proxy.id) return
    this.scale({ ...(r.data.threads === undefined ? {} : { threads: r.data.threads }), ...(r.data.concurrency === undefined ? {} : { concurrency: r.data.concurrency }) })
  }

  /** Changes threads and/or per-queue concurrency live; running jobs and streams continue. */
  scale(settings: ScaleSettings): void {
    if (this.#state !== 'running') return
    const workers = { ...this.#config.workers }
    if (settings.threads !== undefined && settings.threads !== workers.threads) {
      this.pool.resize(settings.threads)
      workers.threads = settings.threads
    }
    if (settings.concurrency !== undefined && settings.concurrency !== workers.concurrency) {
      for (const w of this.#workers) w.concurrency = settings.concurrency
      workers.concurrency = settings.concurrency
    }
    this.#config = { ...this.#config, workers }
    this.#logger.info({ threads: workers.threads, concurrency: workers.concurrency }, 'proxy rescaled')
    void this.#beat()
  }

  heartbeat(): ProxyHeartbeat {
    const stats = this.#pool?.stats ?? { threads: 0, busy: 0, queued: 0 }
    return {
      instance: this.instance,
      proxyId: this.config.proxy.id,
      pools: this.config.proxy.pools,
      queues: this.queues,
      host: hostname(),
      pid: process.pid,
      version: VERSION,
      startedAt: this.#startedAt,
      at: Date.now(),
      threads: stats.threads,
      busyThreads: stats.busy,
      queuedStreams: stats.queued,
      concurrency: this.config.workers.concurrency,
      activeJobs: this.#active.size,
      jobs: [...this.#active.entries()].map(([jobId, a]) => ({ queue: a.queue, jobId, kind: a.kind })),
      state: this.#state === 'draining' ? 'draining' : 'running',
    }
  }

  async #beat(): Promise<void> {
    if (this.#state !== 'running' && this.#state !== 'draining') return
    try {
      await writeHeartbeat(this.#redis, this.config.redis.prefix, this.heartbeat(), this.#opts.heartbeatIntervalMs ?? HEARTBEAT_INTERVAL_MS)
    } catch (error) {
      this.#logger.warn({ err: error }, 'heartbeat not written (Redis unreachable?)')
    }
  }

  /**
   * Graceful stop: no new jobs; running jobs get `graceMs` to finish, then are cancelled cooperatively and
   * put back in the queue. A second call with `force` cancels them now.
   */
  async shutdown(options: { graceMs?: number; force?: boolean } = {}): Promise<void> {
    if (options.force === true && !this.#forced && this.#shutdown !== undefined) {
      this.#forced = true
      this.#logger.warn({ jobs: this.#active.size }, 'forced shutdown: cancelling running jobs now')
      for (const a of this.#active.values()) a.abort('shutdown', 'the proxy is shutting down (forced)')
      return this.#shutdown
    }
    this.#shutdown ??= this.#drain(options.force === true ? 0 : (options.graceMs ?? this.config.workers.shutdownGraceMs))
    return this.#shutdown
  }

  /** Redis unreachable during the drain (redis-loss-watch.ts): every connection dropped, queued writes failed. */
  #disconnectAll(): void {
    this.#logger.warn({ runningJobs: this.#active.size }, 'Redis is unreachable while shutting down: disconnecting instead of waiting for it (a job whose outcome was not written is taken again as stalled)')
    for (const w of this.#workers) void w.disconnect().catch((error: unknown) => this.#logger.warn({ err: error, queue: w.name }, 'worker not disconnected'))
    this.#subscriber?.disconnect()
    this.#redis.disconnect()
    this.#bull.disconnect()
  }

  async #drain(graceMs: number): Promise<void> {
    // a start in progress ends first (it takes no job once a shutdown is asked, or fails and cleans up)
    if (this.#starting !== undefined) await this.#starting.catch(() => undefined)
    if (this.#state === 'new' || this.#state === 'stopped') {
      this.#state = 'stopped'
      this.#redis.disconnect()
      await this.#bull.close()
      return
    }
    this.#state = 'draining'
    this.#logger.info({ runningJobs: this.#active.size, graceMs }, 'shutting down: no new jobs, letting running ones finish')
    let graceOver = false
    const watch = new RedisLossWatch({ redis: this.#redis, mayGiveUp: () => graceOver || this.#active.size === 0, giveUp: () => this.#disconnectAll() })
    await this.#beat()
    const grace = setTimeout(() => {
      graceOver = true
      if (this.#active.size === 0) return
      this.#logger.warn({ jobs: [...this.#active.keys()] }, 'grace period over: cancelling running jobs (they go back to the queue)')
      for (const a of this.#active.values()) a.abort('shutdown', 'the proxy is shutting down')
      // last rung: stream tasks that ignore the cancel for another grace have their threads terminated,
      // so their jobs' processors return and the jobs go back to the queue
      void this.#pool?.destroy('the proxy is shutting down', { graceMs }).catch((error: unknown) => this.#logger.warn({ err: error }, 'stream pool not destroyed'))
    }, graceMs)
    try {
      // close() stops fetching and resolves once every active job's processor has returned and its
      // outcome is written (completed / failed / moved back to wait), or failed to be (Redis lost: watch)
      await Promise.all(this.#workers.map((w) => w.close()))
    } finally {
      clearTimeout(grace)
      clearInterval(this.#heartbeat)
      clearInterval(this.#lockWatch)
    }
    await this.#pool?.close()
    // XAPI connections of runs that returned close in the background (backup/xapi-closes.ts): they end before the proxy
    await xapiClosesSettled()
    this.#flusher.close()
    await this.#subscriber?.quit().catch(() => undefined)
    if (!watch.gaveUp) await removeHeartbeat(this.#redis, this.config.redis.prefix, this.instance).catch((error: unknown) => this.#logger.warn({ err: error }, 'heartbeat not removed'))
    await this.#bull.close()
    await this.#redis.quit().catch(() => undefined)
    watch.stop()
    this.#state = 'stopped'
    this.#logger.info('proxy stopped')
  }
}

/**
 * Glue between a running proxy and its metrics, for `backup-proxy serve`:
 *   - `metricsHooks(metrics, logger)` gives the `onMetrics` (thread deltas → registry) and `onJobEnd`
 *     (jobs_total + job_duration_seconds) callbacks that ProxyRuntime takes;
 *   - `startObservability(...)` registers the scrape-time gauges (jobs_active, threads_busy, threads,
 *     queue job counts), builds the readiness check (Redis reachable, pool started, not draining) and
 *     starts the HTTP server; `close()` undoes all of it.
 * The runtime is seen through the small `ObservedRuntime` interface so this module does not depend on
 * the worker implementation.
 */
import type { Logger } from '../common/log.js'
import { applyMetricDeltas } from './deltas.js'
import { startHttpServer, type HttpServerHandle } from './http-server.js'
import { collectQueueCounts, type CountableQueue } from './queue-collector.js'
import { combineReadiness, redisCheck, type PingableRedis, type ReadinessCheck } from './readiness.js'
import type { ProxyMetrics } from './registry.js'

export type RuntimeState = 'new' | 'running' | 'draining' | 'stopped'

/** What metrics and readiness need to see of a proxy runtime. */
interface ObservedRuntime {
  readonly state: RuntimeState
  /** the Redis client of the runtime's queues */
  readonly redis: PingableRedis
  readonly activeJobs: number
  /** stream pool occupancy; undefined before the pool starts */
  poolStats(): { threads: number; busy: number } | undefined
}

interface JobEndInfo {
  /** task kind (the BullMQ job name, e.g. backup.run) */
  kind: string
  /** success, partial, failure, cancelled, interrupted, skipped, requeued (see jobOutcome) */
  status: string
  /** the backup job and schedule of a backup.run */
  backup?: { job: string; schedule: string }
  durationSeconds: number
  /** stable code of the error that ended the attempt, when it failed: counted in errors_total{code} */
  errorCode?: string
  /** the attempt failed and BullMQ will run the job again: counted in retries_total{reason="job_attempt"} */
  retrying?: boolean
}

interface MetricsHooks {
  onMetrics: (deltas: unknown) => void
  onJobEnd: (info: JobEndInfo) => void
}

/** Callbacks for ProxyRuntime: thread deltas into the registry (refusals logged), finished jobs counted. */
export function metricsHooks(metrics: ProxyMetrics, logger: Pick<Logger, 'warn'>): MetricsHooks {
  return {
    onMetrics: (deltas) => {
      const { rejected } = applyMetricDeltas(metrics, deltas)
      for (const r of rejected) logger.warn({ reason: r.rejection.reason, delta: r.delta }, `metric delta refused: ${r.rejection.message}`)
    },
    onJobEnd: ({ kind, status, durationSeconds, errorCode, retrying, backup }) => {
      metrics.jobFinished(kind, status, durationSeconds, backup)
      if (errorCode !== undefined) metrics.countError(errorCode)
      if (retrying === true) metrics.countRetry('job_attempt')
    },
  }
}

interface ObservabilityOptions {
  metrics: ProxyMetrics
  runtime: ObservedRuntime
  /** BullMQ Queue objects of the queues this proxy serves (for backup_proxy_queue_jobs) */
  queues: readonly CountableQueue[]
  /** config http.listen */
  listen: string
  /** config http.metricsToken */
  metricsToken?: string
  logger: Pick<Logger, 'warn'>
  /** extra readiness checks, by name */
  checks?: Record<string, ReadinessCheck>
}

export interface Observability {
  readonly http: HttpServerHandle
  /** stops the HTTP server (requests in flight are answered) and unregisters the collectors */
  close(): Promise<void>
}

const STATE_REASONS: Record<RuntimeState, string | undefined> = {
  new: 'the thread pool is not started yet',
  running: undefined,
  draining: 'draining for shutdown: no new jobs are taken',
  stopped: 'the proxy is stopped',
}

export async function startObservability(options: ObservabilityOptions): Promise<Observability> {
  const { metrics, runtime, logger } = options
  const collectThreads = (): Promise<void> => {
    const stats = runtime.poolStats()
    if (stats !== undefined) metrics.setThreads(stats.busy, stats.threads)
    return Promise.resolve()
  }
  const unregister = [
    metrics.onCollect('backup_proxy_jobs_active', () => {
      metrics.setJobsActive(runtime.activeJobs)
      return Promise.resolve()
    }),
    // both gauges get the hook: neither depends on the order in which the registry reads them
    metrics.onCollect('backup_proxy_threads_busy', collectThreads),
    metrics.onCollect('backup_proxy_threads', collectThreads),
    collectQueueCounts(metrics, options.queues, { onError: (error, queue) => logger.warn({ err: error, queue }, 'could not read the job counts of a queue for /metrics') }),
  ]
  const isReady = combineReadiness({
    redis: redisCheck(runtime.redis),
    runtime: () => STATE_REASONS[runtime.state],
    ...options.checks,
  })
  let http: HttpServerHandle
  try {
    http = await startHttpServer({ listen: options.listen, metrics, isReady, ...(options.metricsToken === undefined ? {} : { metricsToken: options.metricsToken }) })
  } catch (error) {
    for (const u of unregister) u()
    throw error
  }
  return {
    http,
    close: async () => {
      for (const u of unregister) u()
      await http.close()
    },
  }
}

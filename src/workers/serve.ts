/**
 * `backup-proxy serve` as a function: binds the HTTP endpoints (/metrics /healthz /readyz), then starts a
 * ProxyRuntime with the registered processors (Redis check, pool, then the queue workers: no job is taken
 * before every start-up check passed), and handles process signals:
 *   SIGTERM / SIGINT  graceful drain (workers.shutdownGraceMs), then exit 0; a second signal forces: running
 *                     jobs are cancelled now, and if the proxy has still not stopped FORCED_STOP_MS later (a
 *                     processor that ignores its signal, or a BullMQ connection that does not close after a
 *                     Redis outage) serve fails with E_SHUTDOWN_STUCK and the process exits 1 even though
 *                     handles are left open; jobs still locked return to the queue once their locks expire
 *   SIGHUP            reload the configuration (file < env < flags) and apply threads/concurrency live
 * When the `api` section has a token hash, the xo-proxy API (src/api) is started before any job is taken
 * and closed after the workers stopped; without one its modules are not even loaded (memory: the API
 * brings the XAPI client and the remotes into the main thread). Stream threads start on demand (pool.ts):
 * an idle serve runs none.
 * Resolves with the exit code once the proxy has stopped and everything is closed.
 */
import { Queue } from 'bullmq'
import { BackupProxyError } from '../common/errors.js'
import type { Logger } from '../common/log.js'
import { loadConfig, type Config, type LoadConfigOptions } from '../config/index.js'
import { createMetrics, metricsHooks, startObservability, type Observability, type ProxyMetrics } from '../metrics/index.js'
import { BullConnection } from '../queue/redis.js'
import { loadSealKey, type SealKey } from '../queue/seal.js'
import type { RunningApi } from '../api/index.js'
import type { ThrottleOptions } from '../api/auth.js'
import { builtinProcessors } from './builtin-processors.js'
import type { ProcessorRegistry } from './processors.js'
import { ProxyRuntime } from './proxy.js'

interface ServeOptions {
  config: Config
  logger: Logger
  /** how to reload the configuration on SIGHUP (same file and flags as at start) */
  reload?: LoadConfigOptions
  processors?: ProcessorRegistry
  /** install SIGTERM/SIGINT/SIGHUP handlers (default true) */
  handleSignals?: boolean
  /** called once serving (tests, demo) */
  onReady?: (runtime: ProxyRuntime, observability: Observability, api: RunningApi | undefined) => void
  /** API tuning for tests: bad-token slowdown, openssl binary */
  api?: { throttle?: ThrottleOptions; openssl?: string }
}

/** How long a forced stop (second signal) may take before serve gives up on a clean close. */
const FORCED_STOP_MS = 5000
/** After giving up, how long open handles get before the process is ended (only when serve owns the signals). */
const EXIT_AFTER_STUCK_MS = 1000

export async function serve(options: ServeOptions): Promise<number> {
  const { config, logger } = options
  const sealKey = await loadSealKey(config)
  const metrics = createMetrics()
  const hooks = metricsHooks(metrics, logger)
  const runtime = new ProxyRuntime({
    config,
    processors: options.processors ?? builtinProcessors({ metrics }),
    sealKey,
    logger,
    onMetrics: hooks.onMetrics,
    onJobEnd: hooks.onJobEnd,
  })
  const api = await startConfiguredApi(options, sealKey)
  const queues = metricsQueues(config, runtime.queues, logger)
  const observability = await startServing(runtime, { metrics, queues, api, config, logger })
  logger.info({ url: observability.http.url }, 'HTTP endpoints listening')

  const handle = options.handleSignals ?? true
  const signals = handleSignals(runtime, options, handle)
  options.onReady?.(runtime, observability, api)
  let stuck: BackupProxyError | undefined
  try {
    stuck = await stopped(runtime, signals.forcedAt)
  } finally {
    signals.remove()
    const closing = Promise.all([observability.close(), queues.close(), api?.close()])
    if (stuck === undefined) await closing
    else {
      closing.catch((error: unknown) => logger.warn({ err: error }, 'closing after a stuck stop failed'))
      await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, EXIT_AFTER_STUCK_MS).unref())])
      // what is still open would keep the process alive: when serve owns the signals it owns the exit too
      if (handle) setTimeout(() => process.exit(1), EXIT_AFTER_STUCK_MS).unref()
    }
  }
  if (stuck !== undefined) throw stuck
  return 0
}

/** The xo-proxy API when the config has a token hash; its modules are loaded only then. */
async function startConfiguredApi(options: ServeOptions, sealKey: SealKey): Promise<RunningApi | undefined> {
  const { config, logger } = options
  if (config.api.tokenHash === undefined && config.api.tokenHashFile === undefined) return undefined
  const { startApi } = await import('../api/index.js')
  return startApi({ config, logger, sealKey, ...options.api })
}

interface MetricsQueues {
  queues: Queue[]
  close: () => Promise<void>
}

/** One BullMQ Queue per served queue, for the queue-depth metrics (own connection). */
function metricsQueues(config: Config, names: readonly string[], logger: Logger): MetricsQueues {
  const bull = new BullConnection(config.redis, 'backup-proxy:metrics')
  const queues = names.map((name) => {
    const queue = new Queue(name, { connection: bull.connection, prefix: config.redis.prefix })
    // an `error` nobody listens to is printed raw (multi-line stack) by BullMQ: log it, at most once a minute
    let loggedAt = -Infinity
    queue.on('error', (error) => {
      if (performance.now() - loggedAt < 60_000) return
      loggedAt = performance.now()
      logger.warn({ err: error, queue: name }, 'metrics queue connection error (BullMQ reconnects)')
    })
    return queue
  })
  return {
    queues,
    close: async () => {
      await Promise.all(queues.map((q) => q.close()))
      await bull.close()
    },
  }
}

/**
 * Binds the HTTP port and passes every start-up check before the workers take a job: a failure here
 * stops the runtime and closes what was opened, and leaves queued jobs untouched.
 */
async function startServing(
  runtime: ProxyRuntime,
  s: { metrics: ProxyMetrics; queues: MetricsQueues; api: RunningApi | undefined; config: Config; logger: Logger },
): Promise<Observability> {
  let observability: Observability
  try {
    observability = await startObservability({
      metrics: s.metrics,
      runtime,
      queues: s.queues.queues,
      listen: s.config.http.listen,
      ...(s.config.http.metricsToken === undefined ? {} : { metricsToken: s.config.http.metricsToken }),
      logger: s.logger,
    })
  } catch (error) {
    await runtime.shutdown({ force: true })
    await Promise.all([s.queues.close(), s.api?.close()])
    throw error
  }
  try {
    await runtime.start()
  } catch (error) {
    await runtime.shutdown({ force: true })
    await Promise.all([observability.close(), s.queues.close(), s.api?.close()])
    throw error
  }
  return observability
}

interface SignalHandling {
  /** when a second stop signal forced the stop (Date.now()), if one did */
  forcedAt: () => number | undefined
  remove: () => void
}

/** SIGTERM/SIGINT: graceful then forced stop; SIGHUP: reload and rescale. Installed only when `install`. */
function handleSignals(runtime: ProxyRuntime, options: ServeOptions, install: boolean): SignalHandling {
  const { logger } = options
  let signals = 0
  let forcedAt: number | undefined
  const onStop = (signal: NodeJS.Signals) => {
    signals++
    logger.info({ signal }, signals === 1 ? 'stopping gracefully (send again to force)' : 'forcing stop')
    if (signals > 1) forcedAt ??= Date.now()
    runtime.shutdown({ force: signals > 1 }).catch((error: unknown) => logger.error({ err: error }, 'proxy shutdown failed'))
  }
  const onHup = () => {
    if (options.reload === undefined) return
    loadConfig(options.reload).then(
      (next) => runtime.scale({ threads: next.workers.threads, concurrency: next.workers.concurrency }),
      (error: unknown) => logger.error({ err: error }, 'configuration reload failed; keeping the current settings'),
    )
  }
  if (install) {
    process.on('SIGTERM', onStop)
    process.on('SIGINT', onStop)
    process.on('SIGHUP', onHup)
  }
  return {
    forcedAt: () => forcedAt,
    remove: () => {
      if (!install) return
      process.off('SIGTERM', onStop)
      process.off('SIGINT', onStop)
      process.off('SIGHUP', onHup)
    },
  }
}

/** Resolves once the runtime stopped, or with E_SHUTDOWN_STUCK when a forced stop takes over FORCED_STOP_MS. */
async function stopped(runtime: ProxyRuntime, forcedAt: () => number | undefined): Promise<BackupProxyError | undefined> {
  return new Promise((resolve) => {
    const poll = setInterval(() => {
      const forced = forcedAt()
      if (runtime.state === 'stopped') {
        clearInterval(poll)
        resolve(undefined)
      } else if (forced !== undefined && Date.now() - forced > FORCED_STOP_MS) {
        clearInterval(poll)
        resolve(
          new BackupProxyError(
            'E_SHUTDOWN_STUCK',
            `forced stop did not finish within ${FORCED_STOP_MS} ms (a job ignored its cancellation or a Redis connection did not close): exiting anyway; jobs still locked go back to the queue when their locks expire`,
          ),
        )
      }
    }, 100)
  })
}

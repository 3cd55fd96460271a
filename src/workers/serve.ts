/**
 * `backup-proxy serve` as a function: starts a ProxyRuntime with the registered processors, its metrics
 * and HTTP endpoints (/metrics /healthz /readyz), and handles process signals:
 *   SIGTERM / SIGINT  graceful drain (workers.shutdownGraceMs), then exit 0; a second signal forces
 *   SIGHUP            reload the configuration (file < env < flags) and apply threads/concurrency live
 * Resolves with the exit code once the proxy has stopped and everything is closed.
 */
import { Queue } from 'bullmq'
import type { Logger } from '../common/log.js'
import { loadConfig, type Config, type LoadConfigOptions } from '../config/index.js'
import { createMetrics, metricsHooks, startObservability, type Observability } from '../metrics/index.js'
import { redisOptions } from '../queue/redis.js'
import { loadSealKey } from '../queue/seal.js'
import { builtinProcessors } from './builtin-processors.js'
import type { ProcessorRegistry } from './processors.js'
import { ProxyRuntime } from './proxy.js'

export interface ServeOptions {
  config: Config
  logger: Logger
  /** how to reload the configuration on SIGHUP (same file and flags as at start) */
  reload?: LoadConfigOptions
  processors?: ProcessorRegistry
  /** install SIGTERM/SIGINT/SIGHUP handlers (default true) */
  handleSignals?: boolean
  /** called once serving (tests, demo) */
  onReady?: (runtime: ProxyRuntime, observability: Observability) => void
}

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
  await runtime.start()
  const queues = runtime.queues.map((name) => new Queue(name, { connection: redisOptions(config.redis), prefix: config.redis.prefix }))
  let observability: Observability
  try {
    observability = await startObservability({
      metrics,
      runtime,
      queues,
      listen: config.http.listen,
      ...(config.http.metricsToken === undefined ? {} : { metricsToken: config.http.metricsToken }),
      logger,
    })
  } catch (error) {
    await runtime.shutdown({ force: true })
    await Promise.all(queues.map((q) => q.close()))
    throw error
  }
  logger.info({ url: observability.http.url }, 'HTTP endpoints listening')

  let signals = 0
  const onStop = (signal: NodeJS.Signals) => {
    signals++
    logger.info({ signal }, signals === 1 ? 'stopping gracefully (send again to force)' : 'forcing stop')
    void runtime.shutdown({ force: signals > 1 })
  }
  const onHup = () => {
    if (options.reload === undefined) return
    loadConfig(options.reload).then(
      (next) => runtime.scale({ threads: next.workers.threads, concurrency: next.workers.concurrency }),
      (error: unknown) => logger.error({ err: error }, 'configuration reload failed; keeping the current settings'),
    )
  }
  const handle = options.handleSignals ?? true
  if (handle) {
    process.on('SIGTERM', onStop)
    process.on('SIGINT', onStop)
    process.on('SIGHUP', onHup)
  }
  options.onReady?.(runtime, observability)
  try {
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (runtime.state === 'stopped') {
          clearInterval(poll)
          resolve()
        }
      }, 100)
    })
  } finally {
    if (handle) {
      process.off('SIGTERM', onStop)
      process.off('SIGINT', onStop)
      process.off('SIGHUP', onHup)
    }
    await observability.close()
    await Promise.all(queues.map((q) => q.close()))
  }
  return 0
}

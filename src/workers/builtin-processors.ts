/**
 * The processors a `serve` process registers. The backup engine plugs in here: one
 * `registry.register('<kind>', processor)` line per kind it implements (processors.ts has the contract).
 * Stand-ins (stand-ins/processors.ts) are added only when asked (tests, demos): BACKUP_PROXY_STAND_INS=1
 * or `standIns: true`; they replace the engine's processors for the kinds they cover.
 *
 * The engine (src/backup: the XAPI client, the remotes, VHD code) is imported by the first job that needs
 * it, not when the proxy starts: a proxy waiting for jobs does not hold it in memory (docs/backup.md,
 * Memory). A failed import fails that job (retried like any error) and is tried again by the next one.
 */
import type { TaskKind } from '../queue/tasks.js'
import { ProcessorRegistry, type Processor } from './processors.js'
import { registerStandIns } from './stand-ins/processors.js'
import type { BackupProcessorOptions } from '../backup/processors.js'
import { attachRemoteMetrics, type ProxyMetrics } from '../metrics/index.js'

interface BuiltinOptions {
  standIns?: boolean
  /** the proxy's metrics registry: the engine's main-thread remotes report into it */
  metrics?: ProxyMetrics
}

type Engine = typeof import('../backup/processors.js')

let engine: Promise<Engine> | undefined

function loadEngine(): Promise<Engine> {
  engine ??= import('../backup/processors.js').catch((error: unknown) => {
    engine = undefined
    throw error
  })
  return engine
}

/** A processor made by the engine once it is loaded (on the first job of that kind). */
function fromEngine<K extends TaskKind>(make: (e: Engine) => Processor<K>): Processor<K> {
  let processor: Processor<K> | undefined
  return async (ctx) => {
    processor ??= make(await loadEngine())
    return processor(ctx)
  }
}

export function builtinProcessors(options: BuiltinOptions = {}): ProcessorRegistry {
  const registry = new ProcessorRegistry()
  // ENGINE HOOK: the real processors (src/backup); metrics are attached from here, outside the engine
  const metrics = options.metrics
  const o: BackupProcessorOptions = metrics === undefined ? {} : { remoteMetrics: (remote, id) => attachRemoteMetrics(remote, metrics, id) }
  registry.register('backup.run', fromEngine((e) => e.createBackupRunProcessor(o)))
  registry.register('backup.verify', fromEngine((e) => e.createBackupVerifyProcessor(o)))
  registry.register('backup.restore', fromEngine((e) => e.createBackupRestoreProcessor(o)))
  registry.register('remote.test', fromEngine((e) => e.createRemoteTestProcessor(o)))
  registry.register('remote.list', fromEngine((e) => e.createRemoteListProcessor(o)))
  registry.register('backup.mirror', fromEngine((e) => e.createBackupMirrorProcessor(o)))
  registry.register('backup.metadata', fromEngine((e) => e.createBackupMetadataProcessor(o)))
  if (options.standIns ?? process.env.BACKUP_PROXY_STAND_INS === '1') registerStandIns(registry)
  return registry
}

/**
 * The processors a `serve` process registers. The backup engine plugs in here: one
 * `registry.register('<kind>', processor)` line per kind it implements (processors.ts has the contract).
 * Stand-ins (stand-ins/processors.ts) are added only when asked (tests, demos): BACKUP_PROXY_STAND_INS=1
 * or `standIns: true`; they replace the engine's processors for the kinds they cover.
 */
import { ProcessorRegistry } from './processors.js'
import { registerStandIns } from './stand-ins/processors.js'
import { createBackupMetadataProcessor, createBackupMirrorProcessor, createBackupRestoreProcessor, createBackupRunProcessor, createBackupVerifyProcessor, createRemoteListProcessor, createRemoteTestProcessor } from '../backup/processors.js'
import { attachRemoteMetrics, type ProxyMetrics } from '../metrics/index.js'

export interface BuiltinOptions {
  standIns?: boolean
  /** the proxy's metrics registry: the engine's main-thread remotes report into it */
  metrics?: ProxyMetrics
}

export function builtinProcessors(options: BuiltinOptions = {}): ProcessorRegistry {
  const registry = new ProcessorRegistry()
  // ENGINE HOOK: the real processors (src/backup); metrics are attached from here, outside the engine
  const metrics = options.metrics
  const engine = metrics === undefined ? {} : { remoteMetrics: (remote: Parameters<typeof attachRemoteMetrics>[0], id: string) => attachRemoteMetrics(remote, metrics, id) }
  registry.register('backup.run', createBackupRunProcessor(engine))
  registry.register('backup.verify', createBackupVerifyProcessor(engine))
  registry.register('backup.restore', createBackupRestoreProcessor(engine))
  registry.register('remote.test', createRemoteTestProcessor(engine))
  registry.register('remote.list', createRemoteListProcessor(engine))
  registry.register('backup.mirror', createBackupMirrorProcessor(engine))
  registry.register('backup.metadata', createBackupMetadataProcessor(engine))
  if (options.standIns ?? process.env.BACKUP_PROXY_STAND_INS === '1') registerStandIns(registry)
  return registry
}

/**
 * The processors a `serve` process registers. The backup engine plugs in here: one
 * `registry.register('<kind>', processor)` line per kind it implements (processors.ts has the contract).
 * Stand-ins (stand-ins/processors.ts) are added only when asked (tests, demos): BACKUP_PROXY_STAND_INS=1
 * or `standIns: true`; they replace the engine's processors for the kinds they cover.
 */
import { ProcessorRegistry } from './processors.js'
import { registerStandIns } from './stand-ins/processors.js'
import { backupRunProcessor, backupVerifyProcessor } from '../backup/processors.js'

export interface BuiltinOptions {
  standIns?: boolean
}

export function builtinProcessors(options: BuiltinOptions = {}): ProcessorRegistry {
  const registry = new ProcessorRegistry()
  // ENGINE HOOK: the real processors (src/backup)
  registry.register('backup.run', backupRunProcessor)
  registry.register('backup.verify', backupVerifyProcessor)
  if (options.standIns ?? process.env.BACKUP_PROXY_STAND_INS === '1') registerStandIns(registry)
  return registry
}

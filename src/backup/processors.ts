/**
 * Queue processors of the backup engine (registered in src/workers/builtin-processors.ts):
 * `backup.run` (run.ts through the stream pool) and `backup.verify` (verify.ts on one backup).
 * Their task-log subtrees hang under the job runner's root task. Given the proxy's metrics, the remotes
 * they open on the main thread report operations, bytes and `remote_up` (labelled by the task's id).
 */
import type { JsonValue } from '../common/errors.js'
import type { TaskResult } from '../queue/task-log.js'
import { createRemote } from '../remotes/index.js'
import { attachRemoteMetrics, type ProxyMetrics } from '../metrics/index.js'
import type { JobContext } from '../workers/processors.js'
import { poolExporter } from './pool-exporter.js'
import type { RemoteMetricsHook } from './ports.js'
import { remoteOptionsOf, runBackup } from './run.js'
import { verifyRemote } from './verify.js'

export interface BackupProcessorOptions {
  /** the proxy's registry: remotes opened on the main thread report into it */
  metrics?: ProxyMetrics
}

/** The `backup.run` processor, reporting remote metrics into `options.metrics` when given. */
export function createBackupRunProcessor(options: BackupProcessorOptions = {}): (ctx: JobContext<'backup.run'>) => Promise<TaskResult> {
  const { metrics } = options
  return (ctx) => runBackupJob(ctx, metrics === undefined ? undefined : (remote, remoteId) => attachRemoteMetrics(remote, metrics, remoteId))
}

/** The `backup.verify` processor, reporting remote metrics into `options.metrics` when given. */
export function createBackupVerifyProcessor(options: BackupProcessorOptions = {}): (ctx: JobContext<'backup.verify'>) => Promise<TaskResult> {
  const { metrics } = options
  return (ctx) => verifyJob(ctx, metrics)
}

/** Without metrics (tools, tests). */
export const backupRunProcessor = createBackupRunProcessor()
export const backupVerifyProcessor = createBackupVerifyProcessor()

async function runBackupJob(ctx: JobContext<'backup.run'>, remoteMetrics: RemoteMetricsHook | undefined): Promise<TaskResult> {
  let lastPercent = -1
  const summary = await runBackup(ctx.task, {
    ...(remoteMetrics === undefined ? {} : { remoteMetrics }),
    defaults: ctx.config.backup,
    exporter: poolExporter(ctx.pool),
    signal: ctx.signal,
    emit: ctx.log,
    parentTaskId: ctx.root.id,
    log: ctx.logger,
    progress: (p) => {
      const percent = p.vmsTotal === 0 ? 100 : Math.floor((100 * p.vmsDone) / p.vmsTotal)
      if (percent === lastPercent && p.vmsDone < p.vmsTotal && p.readBytes % (64 * 1024 * 1024) > 4 * 1024 * 1024) return
      lastPercent = percent
      ctx.progress({ percent, doneBytes: p.readBytes, message: `${p.vmsDone}/${p.vmsTotal} VMs` })
    },
  })
  const status = summary.status === 'pending' ? 'interrupted' : summary.status
  return { status, ...(summary.result === undefined ? {} : { result: summary.result }) }
}

async function verifyJob(ctx: JobContext<'backup.verify'>, metrics: ProxyMetrics | undefined): Promise<TaskResult> {
  const remote = createRemote(ctx.task.remote.url, remoteOptionsOf(ctx.task.remote))
  const detach = metrics === undefined ? undefined : attachRemoteMetrics(remote, metrics, ctx.task.remoteId ?? remote.kind)
  try {
    await remote.open()
  } catch (error) {
    detach?.()
    throw error
  }
  try {
    const report = await verifyRemote(remote, { metadataPath: ctx.task.metadataPath, full: true, signal: ctx.signal })
    for (const p of report.problems) ctx.root.warning(`${p.kind}: ${p.path}: ${p.message}`)
    return { status: report.problems.length === 0 ? 'success' : 'failure', result: report as unknown as JsonValue }
  } finally {
    await remote.close().finally(detach)
  }
}

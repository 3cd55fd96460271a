/**
 * Queue processors of the backup engine (registered in src/workers/builtin-processors.ts):
 * `backup.run` (run.ts through the stream pool), `backup.verify` (verify.ts on one backup),
 * `backup.restore` (restore-task.ts: a whole VM restored onto an SR, disks through the stream pool), `remote.test` (the remote's probe)
 * and `remote.list` (the backups on a remote, or the entries of one directory).
 * Their task-log subtrees hang under the job runner's root task. Given a metrics hook (the runner's), the remotes
 * they open on the main thread report operations, bytes and `remote_up` (labelled by the task's id).
 */
import { TaskInvalidError, type JsonValue } from '../common/errors.js'
import type { TaskResult } from '../queue/task-log.js'
import { createRemote } from '../remotes/index.js'
import type { Remote } from '../remotes/remote.js'
import { unknownTaskFields, type TaskRemote } from '../queue/tasks.js'
import { listBackedUpVms, listBackups, type CatalogEntry } from './catalog.js'
import { resolveVhdPath, sourceVdiUuid } from './layout.js'
import { poolExporter, poolXvaExporter } from './pool-exporter.js'
import { poolImporter, poolXvaImporter } from './pool-importer.js'
import { restoreToSr } from './restore-task.js'
import type { BackupJobContext as JobContext, RemoteMetricsHook } from './ports.js'
import { remoteOptionsOf, runBackup } from './run.js'
import { verifyRemote } from './verify.js'
import { poolCopier, runMirror } from './mirror.js'
import { runMetadataBackup } from './metadata-backup.js'

export interface BackupProcessorOptions {
  /** attaches the proxy's metrics to the remotes opened on the main thread (given by the runner) */
  remoteMetrics?: RemoteMetricsHook
}

/** The `backup.run` processor, reporting remote metrics through `options.remoteMetrics` when given. */
export function createBackupRunProcessor(options: BackupProcessorOptions = {}): (ctx: JobContext<'backup.run'>) => Promise<TaskResult> {
  return (ctx) => runBackupJob(ctx, options.remoteMetrics)
}

/** The `backup.verify` processor, reporting remote metrics through `options.remoteMetrics` when given. */
export function createBackupVerifyProcessor(options: BackupProcessorOptions = {}): (ctx: JobContext<'backup.verify'>) => Promise<TaskResult> {
  return (ctx) => verifyJob(ctx, options.remoteMetrics)
}

/** The `remote.test` processor: the remote's write/read/stat probe (Remote.test), its figures as result. */
export function createRemoteTestProcessor(options: BackupProcessorOptions = {}): (ctx: JobContext<'remote.test'>) => Promise<TaskResult> {
  return (ctx) =>
    withRemote(ctx.task.remote, ctx.task.remoteId, options.remoteMetrics, async (remote) => {
      const result = await remote.test({ signal: ctx.signal })
      return { status: 'success', result: { ...result } }
    })
}

/**
 * The `remote.list` processor. With `path`: the entries of that directory (relative to the remote root).
 * Otherwise the backups (oldest first) of `vmUuid`, or of every VM on the remote, keyed by VM uuid.
 */
export function createRemoteListProcessor(options: BackupProcessorOptions = {}): (ctx: JobContext<'remote.list'>) => Promise<TaskResult> {
  return async (ctx) => {
    const { path, vmUuid } = ctx.task
    if (path !== undefined && vmUuid !== undefined) {
      throw new TaskInvalidError('remote.list: give either vmUuid (list its backups) or path (list a directory), not both', { fields: { field: 'path' } })
    }
    return await withRemote(ctx.task.remote, ctx.task.remoteId, options.remoteMetrics, async (remote) => {
      if (path !== undefined) {
        const entries = await remote.list(path)
        return { status: 'success', result: { path, entries: entries.map((e) => ({ path: e.path, isDirectory: e.isDirectory })) } }
      }
      const vms = vmUuid === undefined ? await listBackedUpVms(remote) : [vmUuid]
      const backups: Record<string, JsonValue> = {}
      for (const vm of vms) {
        ctx.signal.throwIfAborted()
        backups[vm] = (await listBackups(remote, vm)).map((b) => backupSummary(vm, b))
      }
      return { status: 'success', result: { backups } }
    })
  }
}

/** JSON summary of one backup for `remote.list` (XO's listVmBackups fields). */
function backupSummary(vmUuid: string, b: CatalogEntry): JsonValue {
  const m = b.metadata
  const name = m.vm.name_label
  return {
    id: b.metadataPath,
    metadataPath: b.metadataPath,
    timestamp: b.timestamp,
    timestampMs: m.timestamp,
    mode: m.mode,
    jobId: m.jobId,
    scheduleId: m.scheduleId,
    sizeBytes: m.size,
    vmName: typeof name === 'string' ? name : '',
    disks: Object.entries(m.vhds).map(([ref, rel]) => ({
      vdiUuid: sourceVdiUuid(m, ref) ?? null,
      vhdPath: resolveVhdPath(vmUuid, rel),
      differencing: m.isVhdDifferencing[ref] ?? false,
    })),
  }
}

/** Opens the task's remote (metrics attached first when given), runs `fn`, always closes it. */
async function withRemote<T>(taskRemote: TaskRemote, remoteId: string | undefined, metrics: RemoteMetricsHook | undefined, fn: (remote: Remote) => Promise<T>): Promise<T> {
  const remote = createRemote(taskRemote.url, remoteOptionsOf(taskRemote))
  const detach = metrics?.(remote, remoteId ?? remote.kind)
  try {
    await remote.open()
  } catch (error) {
    detach?.()
    throw error
  }
  try {
    return await fn(remote)
  } finally {
    await remote.close().finally(detach)
  }
}

/** The `backup.restore` processor: the backup restored as a new VM on the task's SR (restore-task.ts). */
export function createBackupRestoreProcessor(options: BackupProcessorOptions = {}): (ctx: JobContext<'backup.restore'>) => Promise<TaskResult> {
  return async (ctx) => {
    return await withRemote(ctx.task.remote, ctx.task.remoteId, options.remoteMetrics, async (remote) => {
      const result = await restoreToSr(ctx.task, { remote, signal: ctx.signal, root: ctx.root, logger: ctx.logger, progress: ctx.progress, importer: poolImporter(ctx.pool), xvaImporter: poolXvaImporter(ctx.pool) })
      return { status: 'success', result: result as unknown as JsonValue }
    })
  }
}

async function runBackupJob(ctx: JobContext<'backup.run'>, remoteMetrics: RemoteMetricsHook | undefined): Promise<TaskResult> {
  let lastPercent = -1
  // XO adds job fields and settings between versions: kept, ignored, and said so in the task log
  const unknown = unknownTaskFields(ctx.task)
  if (unknown.length > 0) ctx.root.warning(`fields this proxy does not know are ignored: ${unknown.join(', ')}`, { fields: unknown })
  const summary = await runBackup(ctx.task, {
    ...(remoteMetrics === undefined ? {} : { remoteMetrics }),
    defaults: ctx.config.backup,
    exporter: poolExporter(ctx.pool),
    xvaExporter: poolXvaExporter(ctx.pool),
    importer: poolImporter(ctx.pool),
    ...(ctx.job?.isRetry === true ? { earlierAttemptsSince: ctx.job.enqueuedAt } : {}),
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

async function verifyJob(ctx: JobContext<'backup.verify'>, metrics: RemoteMetricsHook | undefined): Promise<TaskResult> {
  return withRemote(ctx.task.remote, ctx.task.remoteId, metrics, async (remote) => {
    const report = await verifyRemote(remote, { metadataPath: ctx.task.metadataPath, full: true, signal: ctx.signal })
    for (const p of report.problems) ctx.root.warning(`${p.kind}: ${p.path}: ${p.message}`)
    return { status: report.problems.length === 0 ? 'success' : 'failure', result: report as unknown as JsonValue }
  })
}

/** The `backup.mirror` processor: XO's mirror backup (mirror.ts), the copies in the stream pool. */
export function createBackupMirrorProcessor(options: BackupProcessorOptions = {}): (ctx: JobContext<'backup.mirror'>) => Promise<TaskResult> {
  const { remoteMetrics } = options
  return async (ctx) => {
    const summary = await runMirror(ctx.task, {
      defaults: ctx.config.backup,
      copier: poolCopier(ctx.pool),
      signal: ctx.signal,
      emit: ctx.log,
      parentTaskId: ctx.root.id,
      log: ctx.logger,
      ...(remoteMetrics === undefined ? {} : { remoteMetrics }),
      progress: (p) => ctx.progress({ percent: p.vmsTotal === 0 ? 100 : Math.floor((100 * p.vmsDone) / p.vmsTotal), doneBytes: p.readBytes, message: `${p.vmsDone}/${p.vmsTotal} VMs` }),
    })
    const status = summary.status === 'pending' ? 'interrupted' : summary.status
    return { status, ...(summary.result === undefined ? {} : { result: summary.result }) }
  }
}

/** The `backup.metadata` processor: XO's metadata backup (metadata-backup.ts). */
export function createBackupMetadataProcessor(options: BackupProcessorOptions = {}): (ctx: JobContext<'backup.metadata'>) => Promise<TaskResult> {
  const { remoteMetrics } = options
  return async (ctx) => {
    const summary = await runMetadataBackup(ctx.task, {
      signal: ctx.signal,
      emit: ctx.log,
      parentTaskId: ctx.root.id,
      ...(remoteMetrics === undefined ? {} : { remoteMetrics }),
    })
    const status = summary.status === 'pending' ? 'interrupted' : summary.status
    return { status, ...(summary.result === undefined ? {} : { result: summary.result }) }
  }
}

/**
 * One `backup.mirror` task: Xen Orchestra's mirror backup (VmsRemote runner). The source remote's VMs are
 * mirrored `concurrency` at a time (XO's default 2): for each VM the backups of the job's mode still
 * missing from the targets are planned (mirror-plan.ts, with the job's filter), copied oldest first
 * (mirror-backup.ts, the bytes in the stream pool), then each target applies its retention to the
 * backups this mirror job wrote (exportRetention of '' < schedule < VM < remote): delta chains are merged
 * (apply-retention.ts, resumable), full backups lose their metadata first, then their XVA and checksum.
 *
 * Resuming after a crash needs nothing special: a killed run leaves temporaries (hidden, removed here
 * before the VM is mirrored), files without metadata (removed before they are written again) or an
 * unfinished merge (resumed by retention); the next run plans again from what the targets hold.
 *
 * The summary is the root task (XO's task log shape: one `backup VM` task per VM with backups, one
 * `export` task per target); `failure` when a VM or a target failed, `interrupted` on cancel.
 */
import { BackupProxyError, CancelledError, serializeError, toError, type JsonValue } from '../common/errors.js'
import { silentLogger, type Logger } from '../common/log.js'
import type { BackupSettings } from '../config/schema.js'
import type { BackupMirrorTask } from '../queue/tasks.js'
import { createRemote } from '../remotes/index.js'
import type { Remote } from '../remotes/remote.js'
import { applyRetention } from './apply-retention.js'
import { listBackedUpVms, listBackups, updateCache, type CatalogEntry } from './catalog.js'
import { mapSettled } from './concurrency.js'
import { vmDir } from './layout.js'
import { mirrorBackup, type MirrorCopier, type MirrorTarget } from './mirror-backup.js'
import { copyFile, copyVhd } from './mirror-copy.js'
import { idsOfPattern, planVmTransfer, targetRetention } from './mirror-plan.js'
import type { RemoteMetricsHook, StreamTaskRunner } from './ports.js'
import { remoteOptionsOf } from './run.js'
import { attachTaskLog, createTaskLog, type Task, type TaskLogEvent, type TaskSummary } from './task-log.js'

interface MirrorEnv {
  defaults: BackupSettings
  copier: MirrorCopier
  signal: AbortSignal
  emit?: (event: TaskLogEvent) => void
  parentTaskId?: string
  log?: Logger
  progress?: (p: { vmsTotal: number; vmsDone: number; readBytes: number }) => void
  remoteMetrics?: RemoteMetricsHook
  /** test hook (see MirrorBackupContext.onFileCopied) */
  onFileCopied?: (path: string) => Promise<void> | void
}

interface Opened {
  source: { url: string; options: MirrorTarget['options']; remote: Remote }
  targets: MirrorTarget[]
}

async function openRemotes(task: BackupMirrorTask, env: MirrorEnv, root: Task, detach: (() => void)[]): Promise<Opened> {
  const open = async (id: string): Promise<{ url: string; options: MirrorTarget['options']; remote: Remote }> => {
    const r = task.remotes[id]!
    const options = remoteOptionsOf(r)
    const remote = createRemote(r.url, options)
    if (env.remoteMetrics !== undefined) detach.push(env.remoteMetrics(remote, id))
    try {
      await remote.open()
    } catch (error) {
      await remote.close().catch(() => undefined)
      throw error
    }
    return { url: r.url, options, remote }
  }
  const source = await open(task.job.sourceRemote)
  const ids = (idsOfPattern(task.job.remotes) ?? Object.keys(task.remotes)).filter((id) => id !== task.job.sourceRemote)
  const targets: MirrorTarget[] = []
  for (const id of ids) {
    if (task.remotes[id] === undefined) {
      root.warning(`remote ${id} of job.remotes is not in the task's remotes and is skipped`)
      continue
    }
    try {
      targets.push({ id, ...(await open(id)), compression: env.defaults.vhdDirectoryCompression })
    } catch (error) {
      root.warning(`remote ${id} is unusable and is skipped`, { error: serializeError(error).message })
    }
  }
  if (targets.length === 0) {
    await source.remote.close().catch(() => undefined)
    throw new BackupProxyError('E_BACKUP', 'none of the target remotes of the mirror could be opened (the source is never a target)')
  }
  return { source, targets }
}

/** Keeps the newest `retention` full backups of the mirror's schedule: metadata first, then XVA and checksum. */
async function fullRetention(remote: Remote, vmUuid: string, scheduleId: string, retention: number): Promise<string[]> {
  const mine = (await listBackups(remote, vmUuid)).filter((b) => b.metadata.mode === 'full' && b.metadata.scheduleId === scheduleId)
  const old = mine.slice(0, Math.max(0, mine.length - Math.max(1, retention)))
  for (const b of old) await remote.unlink(b.metadataPath)
  for (const b of old) {
    const xva = `${vmDir(vmUuid)}/${b.timestamp}.xva`
    for (const path of [xva, `${xva}.checksum`]) await remote.unlink(path).catch((error: unknown) => {
      if ((error as { code?: unknown }).code !== 'ENOENT') throw error
    })
  }
  return old.map((b) => b.metadataPath)
}

async function mirrorVm(vmUuid: string, task: BackupMirrorTask, opened: Opened, env: MirrorEnv, root: Task, signal: AbortSignal, onBytes: (n: number) => void): Promise<void> {
  const mode = task.job.mode
  const source = (await listBackups(opened.source.remote, vmUuid)).filter((b) => b.metadata.mode === mode)
  if (source.length === 0) return
  const vmTask = root.child('backup VM', { id: vmUuid, name: 'backup VM', type: 'VM' })
  try {
    const onTargets = new Map<string, Set<string>>()
    for (const t of opened.targets) {
      await t.remote.removeTemporaries(vmDir(vmUuid))
      onTargets.set(t.id, new Set((await listBackups(t.remote, vmUuid)).filter((b) => b.metadata.mode === mode).map((b) => b.timestamp)))
    }
    const plan = planVmTransfer<CatalogEntry & { jobId: string }>(source.map((b) => ({ ...b, jobId: b.metadata.jobId, metadata: b.metadata })), [...onTargets.values()].map((s) => [...s]), mode, task.job.filter ?? undefined)
    if (plan.transfer.length === 0) vmTask.info(plan.filtered ? 'This VM is excluded by the job filter' : 'No new data to upload for this VM')
    const exports = new Map(opened.targets.map((t) => [t.id, vmTask.child('export', { id: t.id, name: 'export', type: 'remote', isFull: mode === 'full' })]))
    const failed = new Set<string>()
    let sizeBytes = 0
    // bytes read by this VM's earlier backups: onBytes counts the whole VM, mirrorBackup each backup from 0
    let readBase = 0
    for (const backup of plan.transfer) {
      signal.throwIfAborted()
      const todo = opened.targets.filter((t) => !failed.has(t.id) && !onTargets.get(t.id)!.has(backup.timestamp))
      if (todo.length === 0) continue
      const r = await mirrorBackup(backup, todo, { vmUuid, jobId: task.job.id, scheduleId: task.schedule.id, source: opened.source, copier: env.copier, signal, onProgress: (n) => onBytes(readBase + n), ...(env.onFileCopied === undefined ? {} : { onFileCopied: env.onFileCopied }) })
      sizeBytes += r.sizeBytes
      readBase += r.readBytes
      for (const f of r.failed) {
        failed.add(f.id)
        exports.get(f.id)!.end('failure', f.error as unknown as JsonValue)
      }
    }
    for (const t of opened.targets.filter((x) => !failed.has(x.id))) {
      const exp = exports.get(t.id)!
      try {
        const retention = targetRetention(task.job.settings, task.schedule.id, vmUuid, t.id, env.defaults.exportRetention)
        const deleted = mode === 'delta' ? (await applyRetention(t.remote, vmUuid, task.job.id, task.schedule.id, retention, signal)).deleted : await fullRetention(t.remote, vmUuid, task.schedule.id, retention)
        if (deleted.length > 0) await updateCache(t.remote, vmUuid)
        exp.end('success', { size: sizeBytes, deleted })
      } catch (error) {
        exp.fail(error)
      }
    }
    vmTask.end(undefined, { transferred: plan.transfer.map((b) => b.timestamp), size: sizeBytes })
  } catch (error) {
    vmTask.fail(signal.aborted ? toError(signal.reason) : error)
    throw error
  }
}

export async function runMirror(task: BackupMirrorTask, env: MirrorEnv): Promise<TaskSummary> {
  const log = env.log ?? silentLogger
  const data = { mode: task.job.mode, jobId: task.job.id, jobName: task.job.name, scheduleId: task.schedule.id, sourceRemote: task.job.sourceRemote }
  const emit = env.emit ?? (() => undefined)
  const root = env.parentTaskId === undefined ? createTaskLog('mirror backup', data, emit) : attachTaskLog(env.parentTaskId, 'mirror backup', emit)
  const controller = new AbortController()
  const onAbort = () => controller.abort(new CancelledError('the mirror backup was cancelled', { cause: env.signal.reason }))
  if (env.signal.aborted) onAbort()
  env.signal.addEventListener('abort', onAbort, { once: true })
  const signal = controller.signal
  const detach: (() => void)[] = []
  let opened: Opened | undefined
  try {
    opened = await openRemotes(task, env, root, detach)
    const vms = await listBackedUpVms(opened.source.remote)
    root.info('vms', { vms })
    const progress = { vmsTotal: vms.length, vmsDone: 0, readBytes: 0 }
    const concurrency = task.job.settings[task.schedule.id]?.concurrency ?? task.job.settings['']?.concurrency ?? 2
    const o = opened
    const results = await mapSettled(vms, concurrency, async (vm) => {
      // VMs run concurrently: each adds what it read since its last report, so the total never goes back
      let last = 0
      try {
        await mirrorVm(vm, task, o, env, root, signal, (n) => {
          if (n <= last) return
          progress.readBytes += n - last
          last = n
          env.progress?.({ ...progress })
        })
      } finally {
        progress.vmsDone++
        env.progress?.({ ...progress })
      }
    })
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    for (const f of failures) log.warn({ err: f.reason }, 'VM mirror failed')
    root.end(undefined, { vms: vms.length, failed: failures.length })
  } catch (error) {
    root.fail(signal.aborted ? toError(signal.reason) : error)
  } finally {
    env.signal.removeEventListener('abort', onAbort)
    if (opened !== undefined) await Promise.all([opened.source.remote, ...opened.targets.map((t) => t.remote)].map((r) => r.close().catch(() => undefined)))
    for (const d of detach) d()
  }
  return root.summary()
}

/** Copies on the calling thread (tools, tests). */
export const inlineCopier: MirrorCopier = (input, { signal, onProgress }) => {
  const options = { signal, ...(onProgress === undefined ? {} : { onProgress }) }
  return input.op === 'vhd' ? copyVhd(input, options) : copyFile(input, options)
}

/** Copies in the stream pool (`mirror.copy` thread task): what a proxy uses. */
export function poolCopier(pool: StreamTaskRunner): MirrorCopier {
  return (input, { signal, onProgress }) =>
    pool.run('mirror.copy', input, { signal, ...(onProgress === undefined ? {} : { onProgress }) })
}

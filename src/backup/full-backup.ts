/**
 * One VM's full backup (XO's `mode: 'full'`, FullXapi + FullRemoteWriter), on the main thread:
 *
 *  1. read what every target holds for this VM and remove the temporaries a killed run left in its
 *     directory; name the backup (now, after every backup already there);
 *  2. snapshot the VM and tag the snapshot as XO does;
 *  3. export the snapshot as XVA with the job's compression (`native` = gzip, `zstd`, `''` = none) once,
 *     through the XVA exporter (the `backup.xva` pool thread), to every target at once as
 *     `xo-vm-backups/<vm>/<ts>.xva` (+ XO's `.xva.checksum`); a target that fails is dropped (warning);
 *  4. on each target that got the XVA: the metadata JSON as XO's FullRemoteWriter writes it (`mode:
 *     'full'`, `xva: './<ts>.xva'`, `vm`, `vmSnapshot`, `size`, `tags`), cache.json.gz, then XO's
 *     retention: the full backups of this schedule beyond `exportRetention` go (metadata, XVA, checksum);
 *  5. keep `snapshotRetention` backup snapshots of this job (0: the new one goes too, as XO's full mode).
 *
 * The VM fails only when every target failed. Task log: VM → snapshot, export (one per target) →
 * transfer; as XO.
 */
import { BackupProxyError, CancelledError, deserializeError, serializeError, toError } from '../common/errors.js'
import { isTemporaryName } from '../remotes/remote.js'
import { jobCompression, useCompressionParam } from '../xva/compression.js'
import { listBackups, updateCache, type CatalogEntry } from './catalog.js'
import { METADATA_VERSION, formatTimestamp, metadataPath, parseTimestamp, vmDir } from './layout.js'
import type { XapiObject } from './ports.js'
import type { Task } from './task-log.js'
import { listJobSnapshots, pruneSnapshots, removeUntaggedSnapshots, takeBackupSnapshot } from './job-snapshots.js'
import { runXvaExport } from './xva-export.js'
import { resolveChecksumAlgorithm } from '../xva/checksum.js'
import type { RunTarget, VmBackupContext, VmBackupResult, VmSettings } from './vm-backup.js'

/** `<ts>.xva` of a backup, remote-root relative. */
function xvaPath(vmUuid: string, timestamp: string): string {
  return `${vmDir(vmUuid)}/${timestamp}.xva`
}

async function removeTemporaries(t: RunTarget, vmUuid: string, task: Task): Promise<void> {
  let entries
  try {
    entries = await t.remote.list(vmDir(vmUuid), { includeHidden: true })
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ENOENT') return
    throw error
  }
  for (const e of entries) {
    if (e.isDirectory || !isTemporaryName(e.path)) continue
    await t.remote.unlink(`${vmDir(vmUuid)}/${e.path}`).catch((err: unknown) => task.warning(`could not remove ${e.path} on ${t.id}`, { error: serializeError(err).message }))
  }
}

/** XO's deleteFullVmBackups: metadata, XVA and its checksum (which may be missing). */
export async function deleteFullBackup(t: Pick<RunTarget, 'remote'>, vmUuid: string, b: CatalogEntry): Promise<void> {
  const xva = b.metadata.xva
  const paths = [b.metadataPath]
  if (typeof xva === 'string') {
    const path = `${vmDir(vmUuid)}/${xva.replace(/^\.\//, '')}`
    paths.push(path, `${path}.checksum`)
  }
  for (const p of paths) {
    await t.remote.unlink(p).catch((error: unknown) => ((error as { code?: unknown }).code === 'ENOENT' ? undefined : Promise.reject(toError(error))))
  }
}

/** XO's full-mode retention: keeps the newest `retention` full backups of this schedule (the new one included). */
async function applyFullRetention(t: RunTarget, vmUuid: string, scheduleId: string, retention: number): Promise<string[]> {
  const fulls = (await listBackups(t.remote, vmUuid, () => undefined)).filter((b) => b.metadata.mode === 'full' && b.metadata.scheduleId === scheduleId)
  const old = fulls.slice(0, Math.max(0, fulls.length - Math.max(1, retention)))
  for (const b of old) await deleteFullBackup(t, vmUuid, b)
  return old.map((b) => b.metadataPath)
}

export async function backupVmFull(vmUuid: string, ctx: VmBackupContext, settings: VmSettings, task: Task): Promise<VmBackupResult> {
  const t0 = performance.now()
  const { xapi, signal, jobId } = ctx
  const vm = await xapi.getVm(vmUuid)
  const holdings = new Map<string, CatalogEntry[]>()
  await Promise.all(ctx.targets.map(async (t) => {
    holdings.set(t.id, await listBackups(t.remote, vmUuid, (path, error) => task.warning(`ignoring unreadable backup metadata ${path} on ${t.id}`, { error: error.message })))
    await removeTemporaries(t, vmUuid, task)
  }))
  if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new CancelledError()
  const newestMs = Math.max(0, ...[...holdings.values()].flat().map((b) => parseTimestamp(b.timestamp)))
  const timestampMs = Math.max(Math.floor(Date.now() / 1000) * 1000, newestMs + 1000)
  const timestamp = formatTimestamp(timestampMs)
  task.info('full backup: XVA export')

  await removeUntaggedSnapshots(xapi, vm.ref, task)
  const jobSnapshots = await listJobSnapshots(xapi, vm.ref, jobId)
  const nameLabel = `[XO Backup ${ctx.jobName || jobId}] ${typeof vm.record.name_label === 'string' ? vm.record.name_label : vmUuid}`
  const snapshot = await task.child('snapshot').run(
    () => takeBackupSnapshot(xapi, vm, { nameLabel, checkpoint: settings.checkpointSnapshot, signal, jobId, scheduleId: ctx.scheduleId, vmUuid, timestampMs }),
    (s) => s.uuid,
  )

  try {
    const result = await transferAndPublish(vmUuid, vm, snapshot, ctx, settings, task, { timestamp, timestampMs })
    await pruneSnapshots(xapi, jobSnapshots, snapshot, settings.snapshotRetention, task)
    return { ...result, durationMs: performance.now() - t0 }
  } catch (error) {
    await xapi.destroySnapshot(snapshot.ref).catch((e: unknown) => task.warning('could not remove the snapshot of the failed backup', { error: serializeError(e).message }))
    throw error
  }
}

async function transferAndPublish(
  vmUuid: string, vm: XapiObject, snapshot: XapiObject, ctx: VmBackupContext, settings: VmSettings, task: Task, run: { timestamp: string; timestampMs: number },
): Promise<Omit<VmBackupResult, 'durationMs'>> {
  const { signal } = ctx
  const exportTasks = new Map(ctx.targets.map((t) => [t.id, task.child('export', { type: 'remote', id: t.id, isFull: true })]))
  const transferTasks = new Map([...exportTasks].map(([id, et]) => [id, et.child('transfer')]))
  const failed = new Map<string, Error>()
  const drop = (id: string, error: Error): void => {
    if (failed.has(id)) return
    failed.set(id, error)
    exportTasks.get(id)?.warning(`target ${id} dropped: ${error.message}`)
    transferTasks.get(id)?.fail(error)
    exportTasks.get(id)?.fail(error)
  }
  const compression = jobCompression(settings.compression)
  if (ctx.xapi.xvaExportDescriptor === undefined) throw new BackupProxyError('E_NOT_AVAILABLE', 'this XAPI connection cannot export VMs as XVA: full backups need it')
  const descriptor = await ctx.xapi.xvaExportDescriptor(snapshot.ref, useCompressionParam(compression))
  const exporter = ctx.xvaExporter ?? runXvaExport
  let r
  try {
    r = await exporter(
      { descriptor, compression, checksumAlgorithm: resolveChecksumAlgorithm(settings.xvaChecksum ?? 'auto'), targets: ctx.targets.map((t) => ({ id: t.id, url: t.url, options: t.options, path: xvaPath(vmUuid, run.timestamp) })) },
      { signal, onProgress: (p) => ctx.onBytes?.(vmUuid, p.readBytes, undefined) },
    )
  } catch (error) {
    for (const t of ctx.targets) drop(t.id, toError(error))
    throw error
  }
  for (const f of r.failed) drop(f.id, deserializeError(f.error))
  const vmSnapshot = (await ctx.xapi.getRecord('VM', snapshot.ref)).record
  const succeeded: string[] = []
  await Promise.all(ctx.targets.filter((t) => r.succeeded.includes(t.id)).map(async (t) => {
    try {
      // field order of XO's FullRemoteWriter, then size and tags as it adds them
      const metadata = { jobId: ctx.jobId, mode: 'full', scheduleId: ctx.scheduleId, timestamp: run.timestampMs, version: METADATA_VERSION, vm: vm.record, vmSnapshot, xva: `./${run.timestamp}.xva`, size: r.sizeBytes, tags: [] as string[] }
      await t.remote.writeFile(metadataPath(vmUuid, run.timestamp), JSON.stringify(metadata), { exclusive: true, signal })
      transferTasks.get(t.id)?.end('success', { size: r.sizeBytes })
      await updateCache(t.remote, vmUuid)
      const deleted = await applyFullRetention(t, vmUuid, ctx.scheduleId, settings.exportRetention)
      if (deleted.length > 0) exportTasks.get(t.id)?.info('older full backups removed (retention)', { deleted })
      await updateCache(t.remote, vmUuid)
      exportTasks.get(t.id)?.end('success')
      succeeded.push(t.id)
    } catch (error) {
      drop(t.id, toError(error))
    }
  }))
  if (succeeded.length === 0) throw new BackupProxyError('E_BACKUP', `VM ${vmUuid}: every target failed: ${[...failed].map(([id, e]) => `${id}: ${e.message}`).join('; ')}`)
  task.info('XVA exported', { sizeBytes: r.sizeBytes, durationMs: Math.round(r.durationMs) })
  return { vmUuid, timestamp: run.timestamp, full: true, sizeBytes: r.sizeBytes, readBytes: r.sizeBytes, succeeded: succeeded.sort(), failed: [...failed.keys()].sort() }
}

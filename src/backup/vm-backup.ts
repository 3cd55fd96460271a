/**
 * One VM's backup, on the main thread: the light, ordered part of a run.
 *
 *  1. read what every target already holds for this VM (metadata = truth) and remove the leftovers of a
 *     killed run of this job (temporaries, VHDs no metadata references that are newer than the newest
 *     backup);
 *  2. choose the base (base-choice.ts), snapshot the VM and tag the snapshot as XO does;
 *  3. export each disk once through the disk exporter (a pool thread), written to every target at
 *     once; a target that fails any disk is dropped for this VM (warning), its files of this backup
 *     removed;
 *  4. on each target that got every disk: write the metadata JSON (last: the backup now exists), update
 *     cache.json.gz, then apply retention (merge, delete);
 *  5. tag the new snapshot exported and delete older backup snapshots beyond the snapshot retention.
 *
 * The VM fails only when every target failed; then the new snapshot is destroyed so it never becomes a
 * base. Task log: VM → snapshot, export (one per target) → transfer, merge; as XO.
 */
import { BackupProxyError, CancelledError, serializeError, toError, type JsonValue } from '../common/errors.js'
import type { Logger } from '../common/log.js'
import { isTemporaryName, type Remote } from '../remotes/remote.js'
import type { RemoteOptions } from '../remotes/url-types.js'
import {
  TAG_CHAIN_LENGTH, TAG_EXPORTED, chooseBase, type BackupSnapshot,
} from './base-choice.js'
import { listBackups, updateCache, writeMetadata, type CatalogEntry } from './catalog.js'
import { mapSettled } from './concurrency.js'
import { AllTargetsFailedError } from '../common/fan-out.js'
import {
  aliasDataPath, formatTimestamp, isAliasPath, parseTimestamp, resolveVhdPath, sourceVdiUuid, timestampOfName, vdiDir, vmDir,
} from './layout.js'
import type { BackupXapi, DiskExporter, DiskTarget, XapiDisk, XapiObject } from './ports.js'
import { applyRetention } from './apply-retention.js'
import { buildMetadata, setOnVmAndVdis, tagSnapshot, usesVhdDirectory, type RunIds } from './xo-records.js'
import type { Task } from './task-log.js'
import { replicatedSnapshots, toRemotesAndSrs, type SrTarget } from './replication.js'
import { cbtBases, enableCbt, isCbtBase, planDiskRead, purgeSnapshotData, type CbtBaseSnapshot, type NbdSettings } from './nbd-plan.js'

function nbdSettingsOf(s: VmSettings): NbdSettings {
  return { preferNbd: s.preferNbd ?? false, nbdConcurrency: s.nbdConcurrency ?? 1, cbtDestroySnapshotData: s.cbtDestroySnapshotData ?? false, snapshotRetention: s.snapshotRetention }
}
import { backupVmFullMode } from './full-mode.js'
import { doneByEarlierAttempt } from './earlier-attempt.js'
import { backupSnapshotName, listJobSnapshots, pruneSnapshots, removeKilledAttemptSnapshots, removeUntaggedAttemptSnapshots, snapshotDatetime, tagOf } from './job-snapshots.js'
import type { XvaExporter } from './xva-export.js'

export interface RunTarget {
  id: string
  url: string
  options: RemoteOptions
  /** opened by the run */
  remote: Remote
}

export interface VmSettings {
  diskPerVmConcurrency: number
  exportRetention: number
  snapshotRetention: number
  fullInterval: number
  maxExportRateBytesPerSecond: number
  /** a disk export silent this long fails (config backup.exportInactivityTimeoutMs; absent: 5 minutes) */
  exportInactivityTimeoutMs?: number
  /** XO's job compression of full-mode backups' XVA (`native` = gzip); VHD backups do not use it */
  compression: '' | 'native' | 'zstd'
  /** block compression of the VhdDirectory targets (XO's vhdDirectoryCompression) */
  vhdDirectoryCompression: 'brotli' | 'none'
  checkpointSnapshot: boolean
  /** XO's preferNbd, nbdConcurrency, cbtDestroySnapshotData (nbd-plan.ts); absent: HTTP only */
  preferNbd?: boolean
  nbdConcurrency?: number
  cbtDestroySnapshotData?: boolean
}

export interface VmBackupContext {
  jobId: string
  jobName: string
  scheduleId: string
  mode: 'delta' | 'full'
  targets: readonly RunTarget[]
  /** SRs the VM is replicated to (XO's job `srs`), each with its copyRetention */
  srTargets?: readonly SrTarget[]
  xapi: BackupXapi
  exporter: DiskExporter
  /** full backups' XVA transfer (default: on this thread; a proxy passes the stream pool's `backup.xva`) */
  xvaExporter?: XvaExporter
  /** set on a retried queue job: its enqueue time (ms); see earlier-attempt.ts */
  earlierAttemptsSince?: number
  signal: AbortSignal
  log: Logger
  /** bytes read so far by this VM's disks (for run progress) */
  onBytes?: (vmUuid: string, readBytes: number, totalBytes: number | undefined) => void
}

export interface VmBackupResult {
  vmUuid: string
  /** this backup's timestamp, `YYYYMMDDTHHmmssZ` */
  timestamp: string
  full: boolean
  sizeBytes: number
  readBytes: number
  durationMs: number
  succeeded: string[]
  failed: string[]
}

function toSnapshot(obj: XapiObject): BackupSnapshot | undefined {
  const datetime = snapshotDatetime(obj)
  if (datetime === undefined) return undefined
  return { uuid: obj.uuid, ref: obj.ref, datetime, deltaChainLength: Number(tagOf(obj, TAG_CHAIN_LENGTH) ?? 0) || 0 }
}

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new CancelledError()
}

/** Removes what a killed run of this job left on a target: temporaries and unreferenced newer VHDs. */
async function cleanLeftovers(target: RunTarget, vmUuid: string, jobId: string, backups: readonly CatalogEntry[], log: Logger): Promise<void> {
  const remote = target.remote
  const jobDir = `${vmDir(vmUuid)}/vdis/${jobId}`
  let entries: { path: string; isDirectory: boolean }[]
  try {
    entries = await remote.list(jobDir, { recursive: true, includeHidden: true })
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ENOENT') return
    throw error
  }
  const referenced = new Set(backups.flatMap((b) => Object.values(b.metadata.vhds).map((p) => resolveVhdPath(vmUuid, p))))
  const newest = backups.filter((b) => b.metadata.jobId === jobId).map((b) => b.timestamp).sort().pop() ?? ''
  const removed: string[] = []
  for (const e of entries) {
    const full = `${jobDir}/${e.path}`
    const name = e.path.split('/').pop() ?? ''
    if (isTemporaryName(name)) {
      if (e.isDirectory) await remote.rmtree(full)
      else await remote.unlink(full).catch((err: unknown) => ((err as { code?: unknown }).code === 'ENOENT' ? undefined : Promise.reject(toError(err))))
      removed.push(full)
      continue
    }
    // <vdi>/<ts>.vhd or <vdi>/<ts>.alias.vhd not referenced and newer than every backup: a killed run's
    const depth = e.path.split('/').length
    const ts = timestampOfName(name)
    if (depth === 2 && !e.isDirectory && ts !== undefined && ts > newest && !referenced.has(full)) {
      if (name.endsWith('.alias.vhd')) {
        const [vdi] = e.path.split('/')
        await remote.rmtree(aliasDataPath(vmUuid, jobId, vdi!, ts))
      }
      await remote.unlink(full)
      removed.push(full)
    }
  }
  if (removed.length > 0) log.info({ remote: target.id, vm: vmUuid, removed }, 'removed leftovers of an interrupted backup')
}

export async function backupVm(vmUuid: string, ctx: VmBackupContext, settings: VmSettings, task: Task): Promise<VmBackupResult> {
  // a retried job: a VM an earlier attempt already backed up is not backed up twice (earlier-attempt.ts)
  const earlier = await doneByEarlierAttempt(vmUuid, ctx, settings.snapshotRetention, task)
  if (earlier !== undefined) return earlier
  // XO's full mode: the VM as one XVA (full-backup.ts), SR targets as full disk copies (full-mode.ts)
  if (ctx.mode === 'full') return backupVmFullMode(vmUuid, ctx, settings, task, (c) => backupVmDisks(vmUuid, c, settings, task))
  return backupVmDisks(vmUuid, ctx, settings, task)
}

/** The disk path: each disk as a VHD (full or delta) to every remote, and replicas on SR targets. */
async function backupVmDisks(vmUuid: string, ctx: VmBackupContext, settings: VmSettings, task: Task): Promise<VmBackupResult> {
  const t0 = performance.now()
  const { xapi, signal, jobId } = ctx
  const vm = await xapi.getVm(vmUuid)

  // 1. what each target holds
  const holdings = new Map<string, CatalogEntry[]>()
  await Promise.all(ctx.targets.map(async (t) => {
    const backups = await listBackups(t.remote, vmUuid, (path, error) => task.warning(`ignoring unreadable backup metadata ${path} on ${t.id}`, { error: error.message }))
    await cleanLeftovers(t, vmUuid, jobId, backups, ctx.log)
    holdings.set(t.id, backups.filter((b) => b.metadata.jobId === jobId))
  }))
  throwIfAborted(signal)
  // the backup's name: now, but always after every backup already there (two runs in one second)
  const newestMs = Math.max(0, ...[...holdings.values()].flat().map((b) => parseTimestamp(b.timestamp)))
  const timestampMs = Math.max(Math.floor(Date.now() / 1000) * 1000, newestMs + 1000)
  const timestamp = formatTimestamp(timestampMs)
  const run: RunIds = { timestamp, timestampMs }

  // 2. base and snapshot
  // bases whose data was destroyed (cbt_metadata VDIs, no VM record left)
  const cbtSnapshots: CbtBaseSnapshot[] = await cbtBases(xapi, vmUuid, jobId, holdings)
  const exportedByTarget = new Map<string, Set<string>>()
  for (const t of ctx.targets) exportedByTarget.set(t.id, new Set((holdings.get(t.id) ?? []).map((b) => String(b.metadata.vmSnapshot.uuid))))
  const ids = { jobId, jobName: ctx.jobName, scheduleId: ctx.scheduleId, vmUuid }
  for (const t of ctx.srTargets ?? []) exportedByTarget.set(t.id, replicatedSnapshots(t, ids))
  // what killed attempts of this job left goes first (job-snapshots.ts)
  const held = new Set([...exportedByTarget.values()].flatMap((s) => [...s]))
  // XO's default snapshotNameLabelTpl: '[XO Backup {job.name}] {vm.name_label}'
  const snapshotName = backupSnapshotName(ctx.jobName || jobId, typeof vm.record.name_label === 'string' ? vm.record.name_label : vmUuid)
  await removeUntaggedAttemptSnapshots(xapi, vm.ref, snapshotName, task)
  const jobSnapshots = await removeKilledAttemptSnapshots(xapi, await listJobSnapshots(xapi, vm.ref, jobId), ctx.scheduleId, held, task)
  const choice = chooseBase({
    mode: ctx.mode,
    fullInterval: settings.fullInterval,
    snapshots: [...jobSnapshots.map(toSnapshot).filter((s): s is BackupSnapshot => s !== undefined), ...cbtSnapshots],
    exportedByTarget,
  })
  if (choice.fullReason !== undefined) task.info(`full backup: ${choice.fullReason}`)
  else task.info(`delta backup against the snapshot of ${choice.base!.datetime}`)

  await enableCbt(xapi, nbdSettingsOf(settings), vm.ref, task)
  const snapTask = task.child('snapshot')
  const snapshot = await snapTask.run(async () => {
    const s = await xapi.snapshot(vm.ref, snapshotName, {
      checkpoint: settings.checkpointSnapshot,
      signal,
    })
    await tagSnapshot(xapi, s.ref, { jobId, scheduleId: ctx.scheduleId, vmUuid, timestampMs })
    return s
  }, (s) => s.uuid)

  try {
    const toRemotes = ctx.targets.length === 0 ? undefined : () => exportAndPublish(vmUuid, vm, snapshot, choice.base, holdings, ctx, run, settings, task)
    const result = await toRemotesAndSrs(toRemotes, ctx.targets.map((t) => t.id), ctx.srTargets ?? [], { ids, mode: ctx.mode, source: xapi, vm, snapshot, base: choice.base, ...run, signal }, task)
    // as XO: the chain length, then the exported mark, on the snapshot and its VDIs
    await setOnVmAndVdis(xapi, snapshot.ref, { [TAG_CHAIN_LENGTH]: String(choice.deltaChainLength) })
    await setOnVmAndVdis(xapi, snapshot.ref, { [TAG_EXPORTED]: 'true' })
    await pruneSnapshots(xapi, jobSnapshots, snapshot, settings.snapshotRetention, task)
    // XO's _removeSnapshotData: only once every target has this backup
    if (result.failed.length === 0) await purgeSnapshotData(xapi, nbdSettingsOf(settings), snapshot, cbtSnapshots, task)
    return { ...result, durationMs: performance.now() - t0 }
  } catch (error) {
    // a snapshot no target holds must never become a base
    await xapi.destroySnapshot(snapshot.ref).catch((e: unknown) => task.warning('could not remove the snapshot of the failed backup', { error: serializeError(e).message }))
    throw error
  }
}

async function exportAndPublish(
  vmUuid: string, vm: XapiObject, snapshot: XapiObject, base: BackupSnapshot | undefined, holdings: Map<string, CatalogEntry[]>,
  ctx: VmBackupContext, run: RunIds, settings: VmSettings, task: Task,
): Promise<Omit<VmBackupResult, 'durationMs'>> {
  const { xapi, signal, jobId } = ctx
  const { timestamp } = run
  const disks = await xapi.listDisks(snapshot.ref)
  const baseDisks = base === undefined ? [] : isCbtBase(base) ? base.cbtDisks : await xapi.listDisks(base.ref)
  const baseBackupByTarget = new Map<string, CatalogEntry>()
  if (base !== undefined) {
    for (const t of ctx.targets) {
      const b = (holdings.get(t.id) ?? []).find((e) => e.metadata.vmSnapshot.uuid === base.uuid)
      if (b !== undefined) baseBackupByTarget.set(t.id, b)
    }
  }

  const exportTasks = new Map(ctx.targets.map((t) => [t.id, task.child('export', { type: 'remote', id: t.id, isFull: base === undefined })]))
  const transferTasks = new Map([...exportTasks].map(([id, et]) => [id, et.child('transfer')]))
  const failedTargets = new Map<string, Error>()
  const dropTarget = (id: string, error: Error) => {
    if (failedTargets.has(id)) return
    failedTargets.set(id, error)
    exportTasks.get(id)?.warning(`target ${id} dropped: ${error.message}`)
    transferTasks.get(id)?.fail(error)
    exportTasks.get(id)?.fail(error)
  }

  const vhdSource: Record<string, string> = {} // snapshot VDI ref → source VDI uuid
  const isVhdDifferencing: Record<string, boolean> = {}
  const baseVdiOf: Record<string, string> = {} // snapshot VDI ref → uuid of the base VDI of its delta
  let sizeBytes = 0
  let readBytes = 0
  const readByDisk = new Map<string, number>()
  const written = new Map<string, string[]>() // target → remote paths written in this backup

  const exportDisk = async (disk: XapiDisk): Promise<void> => {
    const baseDisk = baseDisks.find((d) => d.sourceVdiUuid === disk.sourceVdiUuid)
    const directoryOf = usesVhdDirectory
    // a delta needs the parent on every live target
    const live = ctx.targets.filter((t) => !failedTargets.has(t.id))
    if (live.length === 0) throw new AllTargetsFailedError([...failedTargets].map(([id, error]) => ({ id, error })), `VM ${vmUuid}`)
    const parents = new Map<string, { path: string; uuid: string }>()
    if (baseDisk !== undefined) {
      for (const t of live) {
        const b = baseBackupByTarget.get(t.id)
        const ref = b === undefined ? undefined : Object.keys(b.metadata.vhds).find((r) => sourceVdiUuid(b.metadata, r) === disk.sourceVdiUuid)
        const path = ref === undefined ? undefined : resolveVhdPath(vmUuid, b!.metadata.vhds[ref]!)
        // as XO's isMergeableParent: a chain stays all VhdFile or all VhdDirectory (else a full)
        if (path !== undefined && isAliasPath(path) === directoryOf(t)) parents.set(t.id, { path, uuid: baseDisk.vdi.uuid })
        else if (path !== undefined) task.info(`full backup of disk ${disk.sourceVdiUuid} on ${t.id}: its chain is ${isAliasPath(path) ? 'VhdDirectory' : 'VhdFile'}, this target now writes ${directoryOf(t) ? 'VhdDirectory' : 'VhdFile'}`)
      }
    }
    // NBD and CBT (nbd-plan.ts): may turn the delta into a full when the base has no data left
    const read = await planDiskRead(xapi, nbdSettingsOf(settings), disk, baseDisk !== undefined && parents.size === live.length ? baseDisk : undefined)
    for (const n of read.notes) task[n.level](n.message)
    const delta = baseDisk !== undefined && read.delta
    const targets: DiskTarget[] = live.map((t) => ({
      id: t.id,
      url: t.url,
      options: t.options,
      path: `${vdiDir(vmUuid, jobId, disk.sourceVdiUuid)}/${timestamp}${directoryOf(t) ? '.alias.vhd' : '.vhd'}`,
      directory: directoryOf(t),
      compression: settings.vhdDirectoryCompression,
      ...(delta ? { parent: parents.get(t.id)! } : {}),
    }))
    const descriptor = await xapi.exportDescriptor(disk.vdi.ref, delta ? { baseRef: baseDisk.vdi.ref } : {})
    const r = await ctx.exporter(
      {
        descriptor,
        vdiUuid: disk.vdi.uuid,
        ...(delta ? { baseVdiUuid: baseDisk.vdi.uuid } : {}),
        targets,
        maxExportRateBytesPerSecond: settings.maxExportRateBytesPerSecond,
        ...(settings.exportInactivityTimeoutMs === undefined ? {} : { exportInactivityTimeoutMs: settings.exportInactivityTimeoutMs }),
        ...(read.nbd === undefined ? {} : { nbd: read.nbd }),
      },
      {
        signal,
        onProgress: (p) => {
          readByDisk.set(disk.vdi.ref, p.readBytes)
          let sum = 0
          for (const v of readByDisk.values()) sum += v
          ctx.onBytes?.(vmUuid, sum, undefined)
        },
      },
    )
    for (const f of r.failed) dropTarget(f.id, new BackupProxyError('E_BACKUP', `disk ${disk.sourceVdiUuid}: ${f.error.message}`, { fields: { disk: disk.sourceVdiUuid } }))
    for (const id of r.succeeded) {
      const t = targets.find((x) => x.id === id)!
      const list = written.get(id) ?? []
      list.push(t.path)
      written.set(id, list)
    }
    if (r.succeeded.length === 0) throw new BackupProxyError('E_BACKUP', `disk ${disk.sourceVdiUuid} could not be written to any target`)
    vhdSource[disk.vdi.ref] = disk.sourceVdiUuid
    isVhdDifferencing[disk.vdi.ref] = r.differencing
    if (delta && r.differencing) baseVdiOf[disk.vdi.ref] = baseDisk.vdi.uuid
    for (const w of r.warnings ?? []) task.warning(w)
    if (r.transport === 'nbd') task.info(`Transfer data using NBD (disk ${disk.sourceVdiUuid}, ${r.nbdConnections ?? 1} connections)`)
    sizeBytes += r.sizeBytes
    readBytes += r.readBytes
    task.info(`disk ${disk.sourceVdiUuid} exported`, { sizeBytes: r.sizeBytes, differencing: r.differencing, durationMs: Math.round(r.durationMs) })
  }

  const settled = await mapSettled(disks, settings.diskPerVmConcurrency, exportDisk)
  const diskError = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected')
  if (diskError !== undefined || signal.aborted) {
    // every target is unusable for this backup (or it was cancelled): remove what was written, and the
    // directories it created if nothing else is in them, report
    await removeWritten(ctx.targets, written, vmUuid, jobId, timestamp)
    await removeEmptyDirs(ctx.targets, vmUuid, jobId, disks, task)
    const error = signal.aborted ? toError(signal.reason) : toError(diskError?.reason)
    for (const t of ctx.targets) dropTarget(t.id, error)
    throw error
  }

  // publish on every target that got all disks
  const vmRecord = vm.record
  const succeeded: string[] = []
  await Promise.all(ctx.targets.map(async (t) => {
    if (failedTargets.has(t.id)) {
      await removeWritten([t], written, vmUuid, jobId, timestamp)
      await removeEmptyDirs([t], vmUuid, jobId, disks, task)
      return
    }
    try {
      const metadata = await buildMetadata(ctx, run, { vm: vmRecord, snapshot, disks, vhdSource, isVhdDifferencing, baseVdiOf, size: sizeBytes }, t)
      await writeMetadata(t.remote, vmUuid, timestamp, metadata, signal)
      transferTasks.get(t.id)?.end('success', { size: sizeBytes })
      await updateCache(t.remote, vmUuid)
      const mergeTask = exportTasks.get(t.id)!.child('merge')
      await mergeTask.run(() => applyRetention(t.remote, vmUuid, jobId, ctx.scheduleId, settings.exportRetention, signal), (r) => r as unknown as JsonValue)
      await updateCache(t.remote, vmUuid)
      exportTasks.get(t.id)!.end('success')
      succeeded.push(t.id)
    } catch (error) {
      dropTarget(t.id, toError(error))
    }
  }))
  if (succeeded.length === 0) {
    throw new AllTargetsFailedError([...failedTargets].map(([id, error]) => ({ id, error })), `VM ${vmUuid}`)
  }
  // a full when no disk is a delta (the NBD fallback of a delta on a data-destroyed base is a full)
  return { vmUuid, timestamp, full: base === undefined || !Object.values(isVhdDifferencing).some(Boolean), sizeBytes, readBytes, succeeded: succeeded.sort(), failed: [...failedTargets.keys()].sort() }
}

async function removeWritten(targets: readonly RunTarget[], written: Map<string, string[]>, vmUuid: string, jobId: string, ts: string): Promise<void> {
  for (const t of targets) {
    for (const path of written.get(t.id) ?? []) {
      try {
        if (path.endsWith('.alias.vhd')) {
          const vdi = path.split('/').at(-2)!
          await t.remote.rmtree(aliasDataPath(vmUuid, jobId, vdi, ts))
        }
        await t.remote.unlink(path)
      } catch (error) {
        if ((error as { code?: unknown }).code !== 'ENOENT') throw error
      }
    }
    written.delete(t.id)
  }
}

/** Removes this backup's directories (`vdis/<job>/<vdi>`, `vdis/<job>`, `vdis`, the VM's) where they are left empty. */
async function removeEmptyDirs(targets: readonly RunTarget[], vmUuid: string, jobId: string, disks: readonly XapiDisk[], task: Task): Promise<void> {
  const remove = (t: RunTarget, path: string) =>
    t.remote.removeEmptyDir(path).catch((error: unknown) => task.warning(`could not remove the empty directory ${path} on ${t.id}`, { error: serializeError(error).message }))
  for (const t of targets) {
    for (const disk of disks) await remove(t, vdiDir(vmUuid, jobId, disk.sourceVdiUuid))
    for (const dir of [`${vmDir(vmUuid)}/vdis/${jobId}`, `${vmDir(vmUuid)}/vdis`, vmDir(vmUuid)]) await remove(t, dir)
  }
}

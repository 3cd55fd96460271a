/**
 * One VM's backup, on the main thread: the light, ordered part of a run.
 *
 *  1. read what every target already holds for this VM (metadata = truth) and remove the leftovers of a
 *     killed run of this job (temporaries, VHDs no metadata references that are newer than the newest
 *     backup);
 *  2. choose the base (base-choice.ts), snapshot the VM and tag the snapshot as XO does;
 *  3. export each disk once through the disk exporter (a pool thread), written to every target at
 *     once; a target that fails any disk is dropped for this VM (warning), its files of this backup
 *     removed (vm-export.ts);
 *  4. on each target that got every disk: write the metadata JSON (last: the backup now exists), update
 *     cache.json.gz, then apply retention (merge, delete) (vm-export.ts);
 *  5. tag the new snapshot exported and delete older backup snapshots beyond the snapshot retention.
 *
 * The VM fails only when every target failed; then the new snapshot is destroyed so it never becomes a
 * base. Task log: VM → snapshot, export (one per target) → transfer, merge; as XO.
 */
import { CancelledError, serializeError, toError } from '../common/errors.js'
import type { Logger } from '../common/log.js'
import { isTemporaryName, type Remote } from '../remotes/remote.js'
import type { RemoteOptions } from '../remotes/url-types.js'
import { chooseBase, type BackupSnapshot } from './base-choice.js'
import { TAG_CHAIN_LENGTH, TAG_EXPORTED, tagChainLength, tagDatetime } from './backup-keys.js'
import { listBackups, type CatalogEntry } from './catalog.js'
import { aliasDataPath, formatTimestamp, parseTimestamp, resolveVhdPath, timestampOfName, vmDir } from './layout.js'
import type { BackupXapi, DiskExporter, XapiObject } from './ports.js'
import { setOnVmAndVdis, type RunIds } from './xo-records.js'
import type { Task } from './task-log.js'
import { replicatedSnapshots, toRemotesAndSrs, type SrTarget } from './replication.js'
import { cbtBases, enableCbt, purgeSnapshotData, type CbtBaseSnapshot } from './nbd-plan.js'
import { exportAndPublish, nbdSettingsOf } from './vm-export.js'

import { backupVmFullMode } from './full-mode.js'
import { doneByEarlierAttempt } from './earlier-attempt.js'
import { listJobSnapshots, pruneSnapshots, removeKilledAttemptSnapshots, removeUntaggedSnapshots, takeBackupSnapshot } from './job-snapshots.js'
import type { XvaExporter } from './xva-export.js'
import type { ChecksumSetting } from '../xva/checksum.js'

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
  /** digest of full backups' `.xva.checksum` (config backup.xvaChecksum; absent: auto, src/xva/checksum.ts) */
  xvaChecksum?: ChecksumSetting
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
  const datetime = tagDatetime(obj.record)
  if (datetime === undefined) return undefined
  return { uuid: obj.uuid, ref: obj.ref, datetime, deltaChainLength: tagChainLength(obj.record) }
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
  await removeUntaggedSnapshots(xapi, vm.ref, task)
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
  // XO's default snapshotNameLabelTpl: '[XO Backup {job.name}] {vm.name_label}'
  const nameLabel = `[XO Backup ${ctx.jobName || jobId}] ${typeof vm.record.name_label === 'string' ? vm.record.name_label : vmUuid}`
  const snapshot = await snapTask.run(
    () => takeBackupSnapshot(xapi, vm, { nameLabel, checkpoint: settings.checkpointSnapshot, signal, jobId, scheduleId: ctx.scheduleId, vmUuid, timestampMs }),
    (s) => s.uuid,
  )

  try {
    const toRemotes = ctx.targets.length === 0 ? undefined : () => exportAndPublish({ vmUuid, vm, snapshot, base: choice.base, holdings, ctx, run, settings, task })
    const result = await toRemotesAndSrs(toRemotes, ctx.targets.map((t) => t.id), ctx.srTargets ?? [], { ids, mode: ctx.mode, source: xapi, vm, snapshot, base: choice.base, ...run, signal }, task)
    // as XO: the chain length, then the exported mark, on the snapshot and its VDIs
    await setOnVmAndVdis(xapi, snapshot.ref, { [TAG_CHAIN_LENGTH]: String(choice.deltaChainLength) })
    await setOnVmAndVdis(xapi, snapshot.ref, { [TAG_EXPORTED]: 'true' })
    await pruneSnapshots(xapi, jobSnapshots, snapshot, Math.max(1, settings.snapshotRetention), task)
    // XO's _removeSnapshotData: only once every target has this backup
    if (result.failed.length === 0) await purgeSnapshotData(xapi, nbdSettingsOf(settings), snapshot, cbtSnapshots, task)
    return { ...result, durationMs: performance.now() - t0 }
  } catch (error) {
    // a snapshot no target holds must never become a base
    await xapi.destroySnapshot(snapshot.ref).catch((e: unknown) => task.warning('could not remove the snapshot of the failed backup', { error: serializeError(e).message }))
    throw error
  }
}

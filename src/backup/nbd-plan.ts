/**
 * NBD and CBT decisions of a VM backup, on the main thread (XO's XapiDiskSource / _AbstractXapi rules):
 *
 * - `planDiskRead`: per disk, whether it is read over NBD (`preferNbd` and `VDI.get_nbd_info` lists a
 *   server: a network has the `nbd` or `insecure_nbd` purpose), and whether a delta comes from CBT
 *   (`VDI.list_changed_blocks(base, snapshot)`, both tracked, a bitmap of the disk's length). CBT
 *   unusable: the delta's block list comes from the HTTP export as before, unless the base snapshot's
 *   data was destroyed, then the disk is a full; the reason goes to the task log either way.
 * - `enableCbt`: before the snapshot, when `cbtDestroySnapshotData` is set (XO enables CBT then).
 * - `cbtBases`: base candidates from `cbt_metadata` VDIs (snapshots whose data was destroyed: their VM
 *   record is gone), grouped by the run that made them, matched to the backups the targets hold by VDI
 *   uuid.
 * - `purgeSnapshotData`: after an export that succeeded on every target, XO's `_removeSnapshotData`
 *   (when no snapshot is kept beyond the next base: our snapshotRetention 0 or 1 is XO's 0):
 *   destroy the snapshot VM (its VDIs stay), `VDI.data_destroy` each VDI (a warning when one fails),
 *   and destroy the older `cbt_metadata` VDIs of the job (the new ones are the next base).
 */
import { BackupProxyError, serializeError } from '../common/errors.js'
import type { NbdServerInfo } from '../xapi/nbd/client.js'
import type { BackupSnapshot } from './base-choice.js'
import { TAG_EXPORTED, TAG_JOB, TAG_VM, tagChainLength, tagDatetime, tagOf } from './backup-keys.js'
import type { CatalogEntry } from './catalog.js'
import { changedBlockIndexes, type NbdExportPlan } from './nbd-source.js'
import type { BackupXapi, XapiDisk, XapiObject } from './ports.js'
import type { Task } from './task-log.js'

/** The XAPI calls of NBD and CBT (xapi-adapter.ts); a port without them never reads over NBD. */
export interface NbdXapi {
  nbdInfo(vdiRef: string): Promise<NbdServerInfo[]>
  /** base64 bitmap of 64 KiB blocks changed from `baseRef` to `vdiRef` */
  listChangedBlocks(baseRef: string, vdiRef: string): Promise<string>
  enableCbt(vdiRef: string): Promise<void>
  dataDestroy(vdiRef: string): Promise<void>
  /** `VM.destroy` alone: the VDIs stay */
  destroyVmRecord(vmRef: string): Promise<void>
  destroyVdi(vdiRef: string): Promise<void>
  /** every `cbt_metadata` VDI of the pool */
  listCbtMetadataVdis(): Promise<XapiObject[]>
}

export interface NbdSettings {
  preferNbd: boolean
  nbdConcurrency: number
  cbtDestroySnapshotData: boolean
  snapshotRetention: number
}

interface DiskReadPlan {
  delta: boolean
  nbd?: NbdExportPlan
  notes: { level: 'info' | 'warning'; message: string }[]
}

/** A base made of `cbt_metadata` VDIs (its VM snapshot was destroyed with the data). */
export interface CbtBaseSnapshot extends BackupSnapshot {
  cbtDisks: XapiDisk[]
}

export function isCbtBase(base: BackupSnapshot | undefined): base is CbtBaseSnapshot {
  return base !== undefined && 'cbtDisks' in base
}

export async function planDiskRead(xapi: BackupXapi, settings: NbdSettings, disk: XapiDisk, base: XapiDisk | undefined): Promise<DiskReadPlan> {
  const notes: DiskReadPlan['notes'] = []
  const baseHasData = base === undefined || base.vdi.record.type !== 'cbt_metadata'
  const what = `disk ${disk.sourceVdiUuid}`
  const noNbd = (reason: string): DiskReadPlan => {
    if (settings.preferNbd) notes.push({ level: 'warning', message: `can't connect through NBD (${reason}), fall back to stream export for ${what}` })
    if (!baseHasData) notes.push({ level: 'warning', message: `full backup of ${what}: the base snapshot's data was destroyed and its delta needs NBD with CBT` })
    return { delta: base !== undefined && baseHasData, notes }
  }
  if (!settings.preferNbd || xapi.nbd === undefined) return noNbd(xapi.nbd === undefined ? 'this XAPI connection has no NBD support' : 'preferNbd is off')
  let servers: NbdServerInfo[]
  try {
    servers = await xapi.nbd.nbdInfo(disk.vdi.ref)
  } catch (error) {
    return noNbd(`VDI.get_nbd_info failed: ${serializeError(error).message}`)
  }
  if (servers.length === 0) return noNbd('no network of the pool has the nbd or insecure_nbd purpose')
  const vdi = (await xapi.getRecord('VDI', disk.vdi.ref)).record
  const virtualSizeBytes = Number(vdi.virtual_size)
  const plan: NbdExportPlan = { servers, concurrency: settings.nbdConcurrency, virtualSizeBytes, timestampMs: Date.now(), fallback: 'http' }
  if (base === undefined) return { delta: false, nbd: plan, notes }
  try {
    if (vdi.cbt_enabled !== true) throw new BackupProxyError('E_CBT', 'CBT is disabled on the disk')
    const baseRecord = (await xapi.getRecord('VDI', base.vdi.ref)).record
    if (baseRecord.cbt_enabled !== true && baseRecord.type !== 'cbt_metadata') throw new BackupProxyError('E_CBT', 'CBT is disabled on the base snapshot')
    const bitmap = await xapi.nbd.listChangedBlocks(base.vdi.ref, disk.vdi.ref)
    const changed = changedBlockIndexes(bitmap, virtualSizeBytes)
    notes.push({ level: 'info', message: `${what}: delta from CBT, ${changed.length} changed blocks of 2 MiB` })
    return { delta: true, nbd: { ...plan, changedBlocks: bitmap, fallback: baseHasData ? 'http' : 'http-full' }, notes }
  } catch (error) {
    const reason = serializeError(error).message
    if (!baseHasData) {
      notes.push({ level: 'warning', message: `full backup of ${what}: CBT is unusable (${reason}) and the base snapshot's data was destroyed` })
      return { delta: false, nbd: plan, notes }
    }
    notes.push({ level: 'info', message: `${what}: CBT is unusable (${reason}), the delta's blocks are listed by the HTTP export` })
    return { delta: true, nbd: plan, notes }
  }
}

/** XO enables CBT on the VM's disks before the snapshot when the snapshot data will be destroyed. */
export async function enableCbt(xapi: BackupXapi, settings: NbdSettings, vmRef: string, task: Task): Promise<void> {
  if (!settings.cbtDestroySnapshotData || !settings.preferNbd || xapi.nbd === undefined) return
  try {
    for (const d of await xapi.listDisks(vmRef)) await xapi.nbd.enableCbt(d.vdi.ref)
  } catch (error) {
    task.info(`couldn't enable CBT`, { error: serializeError(error).message })
  }
}

/** Base candidates made of this job's `cbt_metadata` VDIs, one per run, known to the targets. */
export async function cbtBases(xapi: BackupXapi, vmUuid: string, jobId: string, holdings: ReadonlyMap<string, readonly CatalogEntry[]>): Promise<CbtBaseSnapshot[]> {
  if (xapi.nbd === undefined) return []
  const vdis = (await xapi.nbd.listCbtMetadataVdis()).filter((v) => tagOf(v.record, TAG_JOB) === jobId && tagOf(v.record, TAG_VM) === vmUuid && tagOf(v.record, TAG_EXPORTED) === 'true')
  const byDatetime = new Map<string, XapiObject[]>()
  for (const v of vdis) {
    const d = tagDatetime(v.record)
    if (d !== undefined) byDatetime.set(d, [...(byDatetime.get(d) ?? []), v])
  }
  const entries = [...holdings.values()].flat()
  const out: CbtBaseSnapshot[] = []
  for (const [datetime, group] of byDatetime) {
    const uuids = new Set(group.map((v) => v.uuid))
    const entry = entries.find((e) => Object.values(e.metadata.vdis).some((r) => uuids.has(String(r.uuid))))
    if (entry === undefined) continue
    const cbtDisks: XapiDisk[] = []
    for (const v of group) {
      let sourceVdiUuid = v.uuid
      const src = String(v.record.snapshot_of)
      if (src !== 'OpaqueRef:NULL') sourceVdiUuid = await xapi.getRecord('VDI', src).then((r) => r.uuid, () => v.uuid)
      cbtDisks.push({ vbd: { ref: '', uuid: '', record: {} }, vdi: v, sourceVdiUuid })
    }
    out.push({ uuid: String(entry.metadata.vmSnapshot.uuid), ref: `cbt_metadata:${datetime}`, datetime, deltaChainLength: tagChainLength(group[0]!.record), cbtDisks })
  }
  return out
}

/** XO's `_removeSnapshotData`, after an export that succeeded on every target. */
export async function purgeSnapshotData(xapi: BackupXapi, settings: NbdSettings, snapshot: XapiObject, olderCbt: readonly CbtBaseSnapshot[], task: Task): Promise<void> {
  if (!settings.cbtDestroySnapshotData || !settings.preferNbd || settings.snapshotRetention > 1 || xapi.nbd === undefined) return
  const nbd = xapi.nbd
  task.info('will delete snapshot data')
  const disks = await xapi.listDisks(snapshot.ref)
  await nbd.destroyVmRecord(snapshot.ref)
  for (const d of disks) {
    try {
      await nbd.dataDestroy(d.vdi.ref)
      task.info('Snapshot data has been deleted', { vdi: d.vdi.uuid })
    } catch (error) {
      task.warning(`Couldn't delete snapshot data`, { vdi: d.vdi.uuid, error: serializeError(error).message })
    }
  }
  for (const old of olderCbt) {
    for (const d of old.cbtDisks) {
      await nbd.destroyVdi(d.vdi.ref).catch((error: unknown) => task.warning(`could not delete old CBT metadata ${d.vdi.uuid}`, { error: serializeError(error).message }))
    }
  }
}

/**
 * What XO's backup code writes about a backup, on the pool and on the remote, built the same way here:
 *  - the tags of a backup snapshot and of its VDIs (XO's setVmOtherConfig, setVmSnapshotContentKeys,
 *    setVmDeltaChainLength, markExportSuccessfull: `xo:backup:*` in other_config, the datetime in
 *    XAPI's format), which is what XO's next run looks for to chain a delta onto our backup;
 *  - the metadata JSON of a delta backup, field for field as XO's IncrementalRemoteWriter writes it;
 *  - whether a target gets VhdDirectory (XO: always on S3 and encrypted remotes, else the remote's `useVhdDirectory`).
 */
import { METADATA_VERSION, formatTimestamp, vhdRelativePath, type BackupMetadata } from './layout.js'
import { useVhdDirectory } from '../remotes/remote.js'
import type { BackupXapi, Rec, XapiDisk, XapiObject } from './ports.js'
import { TAG_BASE_DELTA, TAG_CONTENT_KEY, TAG_DATETIME, TAG_JOB, TAG_QCOW2_FIX, TAG_SCHEDULE, TAG_VM } from './backup-keys.js'
import type { RunTarget, VmBackupContext } from './vm-backup.js'

/**
 * A target gets VhdDirectory when its options ask for it or its remote forces it (XO's handler
 * `useVhdDirectory()`: always on S3, and on an encrypted remote, whose files are read whole).
 */
export function usesVhdDirectory(target: Pick<RunTarget, 'options' | 'remote'>): boolean {
  return useVhdDirectory(target.remote, target.options)
}

/** The run's identity in names and metadata. */
export interface RunIds {
  /** `YYYYMMDDTHHmmssZ` */
  timestamp: string
  timestampMs: number
}

/** XAPI's datetime format, which XO writes in `xo:backup:datetime`: `20261125T22:30:00Z`. */
export function xapiDateTime(ms: number): string {
  const ts = formatTimestamp(ms)
  return `${ts.slice(0, 11)}:${ts.slice(11, 13)}:${ts.slice(13)}`
}

/** XO's applyToVmAndVdis: the same other_config entries on a VM (snapshot) and each of its disks. */
export async function setOnVmAndVdis(xapi: BackupXapi, vmRef: string, entries: Record<string, string | null>, perVdi?: (vdi: XapiObject) => Record<string, string>): Promise<void> {
  await xapi.setOtherConfigEntries('VM', vmRef, entries)
  for (const d of await xapi.listDisks(vmRef)) await xapi.setOtherConfigEntries('VDI', d.vdi.ref, { ...entries, ...perVdi?.(d.vdi) })
}

/** Tags a new backup snapshot as XO's setVmOtherConfig + setVmSnapshotContentKeys do. */
export async function tagSnapshot(xapi: BackupXapi, ref: string, t: { jobId: string; scheduleId: string; vmUuid: string; timestampMs: number }): Promise<void> {
  await setOnVmAndVdis(xapi, ref, {
    [TAG_DATETIME]: xapiDateTime(t.timestampMs),
    [TAG_QCOW2_FIX]: 'true',
    [TAG_JOB]: t.jobId,
    [TAG_SCHEDULE]: t.scheduleId,
    [TAG_VM]: t.vmUuid,
  }, (vdi) => ({ [TAG_CONTENT_KEY]: vdi.uuid }))
}

function asRecordMap(items: readonly XapiObject[]): Record<string, Rec> {
  return Object.fromEntries(items.map((i) => [i.ref, i.record]))
}

interface MetadataInput {
  vm: Rec
  snapshot: XapiObject
  disks: readonly XapiDisk[]
  vhdSource: Record<string, string>
  isVhdDifferencing: Record<string, boolean>
  baseVdiOf: Record<string, string>
  size: number
}

/**
 * The metadata JSON of a backup, field for field (and in the order) XO's IncrementalRemoteWriter writes
 * it, with the records read fresh from XAPI after the snapshot was tagged (as XO reloads them): VDIs
 * with `xo:base_delta_vdi` / `xo:backup:vm` added to their other_config, `$snapshot_of$uuid` and
 * `$SR$uuid`; VIFs with their network's uuid, name and VLAN; the VTPMs' contents; `tags` (long-term
 * retention buckets: none, this proxy has no long-term retention) and `size` last.
 */
export async function buildMetadata(ctx: VmBackupContext, run: RunIds, m: MetadataInput, target: RunTarget): Promise<BackupMetadata> {
  const { xapi } = ctx
  const directory = usesVhdDirectory(target)
  const vmSnapshot = (await xapi.getRecord('VM', m.snapshot.ref)).record
  const srUuids = new Map<string, string>()
  const srUuid = async (ref: string): Promise<string> => {
    if (!srUuids.has(ref)) srUuids.set(ref, (await xapi.getRecord('SR', ref)).uuid)
    return srUuids.get(ref)!
  }
  const vdis: Record<string, Rec> = {}
  for (const d of m.disks) {
    const rec = (await xapi.getRecord('VDI', d.vdi.ref)).record
    const otherConfig = { ...(rec.other_config as Record<string, string>), [TAG_BASE_DELTA]: m.baseVdiOf[d.vdi.ref], [TAG_VM]: String(m.vm.uuid) }
    vdis[d.vdi.ref] = { ...rec, other_config: otherConfig, $snapshot_of$uuid: d.sourceVdiUuid, $SR$uuid: await srUuid(String(rec.SR)) }
  }
  const vifs: Record<string, Rec> = {}
  for (const vif of await xapi.listVifs(m.snapshot.ref)) {
    const network = await xapi.getRecord('network', String(vif.record.network))
    const pifs = network.record.PIFs as string[] | undefined
    const vlan = pifs?.[0] === undefined ? undefined : (await xapi.getRecord('PIF', pifs[0])).record.VLAN
    vifs[vif.ref] = { ...vif.record, $network$uuid: network.uuid, $network$name_label: network.record.name_label, $network$VLAN: vlan }
  }
  const metadata = {
    includeNonNbdQcow2Fix: true,
    isVhdDifferencing: m.isVhdDifferencing,
    jobId: ctx.jobId,
    mode: 'delta' as const,
    scheduleId: ctx.scheduleId,
    timestamp: run.timestampMs,
    vbds: asRecordMap(m.disks.map((d) => d.vbd)),
    vdis,
    version: METADATA_VERSION,
    vifs,
    vhds: Object.fromEntries(Object.entries(m.vhdSource).map(([ref, vdi]) => [ref, vhdRelativePath(ctx.jobId, vdi, run.timestamp, directory)])),
    vm: m.vm,
    vmSnapshot,
    vtpms: await xapi.vtpmContents(m.snapshot.ref),
    tags: [] as string[],
    size: m.size,
  }
  // undefined values (no base for a full, no VLAN) are left out, as JSON.stringify does for XO
  return JSON.parse(JSON.stringify(metadata)) as BackupMetadata
}


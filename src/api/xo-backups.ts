/**
 * VM backups on a remote in the shape xo-server expects from `backup.listVmBackups` (XO's
 * formatVmBackups of RemoteAdapter#listAllVmBackups: per VM uuid, oldest first, each backup with `id`
 * = its metadata path from the remote root with a leading `/`, `disks[].id` = the VHD path likewise),
 * `backup.deleteVmBackup(s)` by those ids, and `remote.getTotalBackupSize` (`{onDisk}`: the sum of the
 * backups' sizes, as XO computes it from the same listing).
 *
 * Deleting a backup removes its metadata first (it stops being visible) — and a full backup's XVA and
 * `.xva.checksum` —, rewrites the VM's `cache.json.gz`, then for each of its disks: when the next backup of that disk chain is a
 * differencing VHD built on it, the deleted VHD is merged into that child (so the chain stays whole,
 * the way retention does it); otherwise the VHD is removed. An id that is not a backup metadata path
 * (`/xo-vm-backups/<vm uuid>/<YYYYMMDDTHHmmssZ>.json`) is refused before any I/O.
 */
import { posix } from 'node:path'
import { BackupProxyError, RemoteError, type JsonValue } from '../common/errors.js'
import type { Remote } from '../remotes/remote.js'
import { listBackedUpVms, listBackups, updateCache, type CatalogEntry } from '../backup/catalog.js'
import { BACKUP_DIR, resolveVhdPath, sourceVdiUuid } from '../backup/layout.js'
import { mergeChain, removeVhd } from '../backup/vhd-ops.js'
import { deleteFullBackup } from '../backup/full-backup.js'

const BACKUP_ID_RE = /^\/?xo-vm-backups\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/(\d{8}T\d{6}Z)\.json$/i

/** XO's formatted VM backup (formatVmBackups.mjs). */
function formatVmBackup(vmUuid: string, entry: CatalogEntry, remoteId: string): Record<string, JsonValue> {
  const m = entry.metadata
  const id = `/${entry.metadataPath}`
  const differencing = Object.values(m.isVhdDifferencing)
  const suspend = m.vmSnapshot.suspend_VDI
  const withMemory = suspend !== undefined && suspend !== 'OpaqueRef:NULL'
  const str = (v: unknown): JsonValue => (typeof v === 'string' ? v : null)
  const tags = Array.isArray(m.vm.tags) ? (m.vm.tags as unknown[]).filter((t): t is string => typeof t === 'string') : []
  return {
    type: 'xo-vm-backup',
    backupRepository: remoteId,
    disks: Object.entries(m.vhds).map(([ref, rel]) => ({
      id: `${posix.dirname(id)}/${rel}`,
      name: str(m.vdis[ref]?.name_label),
      uuid: str(m.vdis[ref]?.uuid) ?? sourceVdiUuid(m, ref) ?? ref,
    })),
    id,
    isImmutable: false,
    jobId: m.jobId,
    mode: m.mode,
    scheduleId: m.scheduleId,
    size: m.size,
    timestamp: m.timestamp,
    vm: { uuid: str(m.vm.uuid) ?? vmUuid, name_description: str(m.vm.name_description), name_label: str(m.vm.name_label), tags },
    tags: [],
    differencingVhds: differencing.filter((d) => d).length,
    dynamicVhds: differencing.filter((d) => !d).length - (withMemory ? 1 : 0),
    withMemory,
  }
}

/** Every VM's backups on `remote` (XO's listAllVmBackups → formatVmBackups), or one VM's. */
export async function listFormattedVmBackups(remote: Remote, remoteId: string, vmId?: string): Promise<Record<string, JsonValue[]>> {
  const vms = vmId === undefined ? await listBackedUpVms(remote) : [vmId]
  const out: Record<string, JsonValue[]> = {}
  for (const vm of vms) {
    if (vm.startsWith('.') || vm.endsWith('.lock')) continue
    const backups = await listBackups(remote, vm, () => undefined)
    if (backups.length > 0 || vmId !== undefined) out[vm] = backups.map((b) => formatVmBackup(vm, b, remoteId))
  }
  return out
}

/** XO's getTotalBackupSize: the sum of the VM backups' sizes (their metadata `size`), `{onDisk}`. */
export async function totalBackupSize(remote: Remote): Promise<{ onDisk: number }> {
  let onDisk = 0
  for (const vm of await listBackedUpVms(remote)) {
    if (vm.startsWith('.') || vm.endsWith('.lock')) continue
    for (const b of await listBackups(remote, vm, () => undefined)) onDisk += b.metadata.size
  }
  return { onDisk }
}

export function parseBackupId(id: string): { vmUuid: string; timestamp: string; metadataPath: string } {
  const m = BACKUP_ID_RE.exec(id)
  if (m === null) {
    throw new BackupProxyError('E_USAGE', `"${id}" is not a VM backup id (expected /${BACKUP_DIR}/<vm uuid>/<YYYYMMDDTHHmmssZ>.json, as backup.listVmBackups gives)`, { fields: { field: 'filename' } })
  }
  return { vmUuid: m[1]!.toLowerCase(), timestamp: m[2]!, metadataPath: `${BACKUP_DIR}/${m[1]!.toLowerCase()}/${m[2]!}.json` }
}

interface DiskOf {
  vdi: string
  path: string
  differencing: boolean
}

function disksOf(vmUuid: string, e: CatalogEntry): DiskOf[] {
  return Object.entries(e.metadata.vhds).map(([ref, rel]) => {
    const path = resolveVhdPath(vmUuid, rel)
    return { vdi: posix.dirname(path), path, differencing: e.metadata.isVhdDifferencing[ref] ?? true }
  })
}

/** Deletes backups of one VM (see the header); returns the metadata paths removed. */
async function deleteBackupsOfVm(remote: Remote, vmUuid: string, timestamps: ReadonlySet<string>): Promise<string[]> {
  const all = await listBackups(remote, vmUuid, () => undefined)
  const doomed = all.filter((b) => timestamps.has(b.timestamp))
  if (doomed.length === 0) return []
  for (const b of doomed) await remote.unlink(b.metadataPath)
  // a full backup's XVA and checksum go with it (XO's deleteFullVmBackups)
  for (const b of doomed.filter((x) => x.metadata.mode === 'full')) await deleteFullBackup({ remote }, vmUuid, b)
  await updateCache(remote, vmUuid)
  // per disk chain directory, oldest first: a run of deleted VHDs goes into the next kept differencing one
  const chains = new Map<string, { ts: string; disk: DiskOf; deleted: boolean }[]>()
  for (const b of all) {
    for (const disk of disksOf(vmUuid, b)) {
      const list = chains.get(disk.vdi) ?? []
      list.push({ ts: b.timestamp, disk, deleted: timestamps.has(b.timestamp) })
      chains.set(disk.vdi, list)
    }
  }
  for (const list of chains.values()) {
    list.sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0))
    let pending: string[] = []
    for (const item of list) {
      if (item.deleted) {
        pending.push(item.disk.path)
        continue
      }
      if (pending.length > 0) {
        if (item.disk.differencing) await mergeChain(remote, [...pending, item.disk.path])
        else for (const p of pending) await removeVhd(remote, p)
      }
      pending = []
    }
    for (const p of pending) await removeVhd(remote, p)
  }
  return doomed.map((b) => `/${b.metadataPath}`)
}

/** XO's deleteVmBackups: ids from listVmBackups; an id whose metadata is already gone is not an error. */
export async function deleteVmBackups(remote: Remote, ids: readonly string[]): Promise<string[]> {
  const byVm = new Map<string, Set<string>>()
  for (const id of ids) {
    const { vmUuid, timestamp } = parseBackupId(id)
    const set = byVm.get(vmUuid) ?? new Set<string>()
    set.add(timestamp)
    byVm.set(vmUuid, set)
  }
  const removed: string[] = []
  for (const [vm, set] of byVm) {
    try {
      removed.push(...(await deleteBackupsOfVm(remote, vm, set)))
    } catch (error) {
      if (error instanceof RemoteError && error.code === 'ENOENT') continue
      throw error
    }
  }
  return removed
}

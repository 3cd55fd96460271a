/**
 * Retention planning (pure): which backups of a VM leave a remote, and which VHD merges keep the
 * remaining chains valid and short.
 *
 * Like XO, retention counts the backups of one job+schedule on one remote (`exportRetention`), oldest
 * first out. Deleting a backup removes its metadata first (the backup stops being visible), then for each
 * disk the VHDs of deleted backups that are ancestors of a kept VHD are merged into it (the oldest kept
 * backup becomes a full), and deleted VHDs that nothing kept depends on are simply removed.
 *
 * A disk's chain is the list of its VHDs in timestamp order; a differencing VHD's parent is the one just
 * before it in that list (we always chain onto the previous backup of the same target).
 */

interface RetentionDisk {
  /** VHD path relative to the remote root */
  path: string
  differencing: boolean
}

export interface RetentionBackup {
  timestamp: string
  metadataPath: string
  /** source VDI uuid → its VHD in this backup */
  disks: Record<string, RetentionDisk>
}

interface MergePlan {
  vdiUuid: string
  /** oldest first; every element but the last is deleted, merged into the last which stays */
  chain: string[]
}

interface RetentionPlan {
  keep: RetentionBackup[]
  /** metadata files to remove (first) */
  deleteMetadata: string[]
  /** chains to merge (second), each ending with a kept VHD */
  merges: MergePlan[]
  /** VHDs to remove (last) that nothing kept depends on */
  deleteVhds: string[]
}

/** Plans retention of `backups` (any order) keeping the newest `retention` ones. */
export function planRetention(backups: readonly RetentionBackup[], retention: number): RetentionPlan {
  if (!Number.isInteger(retention) || retention < 1) throw new RangeError(`exportRetention must be a whole number >= 1, got ${retention}`)
  const sorted = [...backups].sort((a, b) => (a.timestamp < b.timestamp ? -1 : a.timestamp > b.timestamp ? 1 : 0))
  const cut = Math.max(0, sorted.length - retention)
  const deleted = sorted.slice(0, cut)
  const keep = sorted.slice(cut)
  const plan: RetentionPlan = { keep, deleteMetadata: deleted.map((b) => b.metadataPath), merges: [], deleteVhds: [] }
  if (deleted.length === 0) return plan

  const vdiUuids = new Set(sorted.flatMap((b) => Object.keys(b.disks)))
  for (const vdiUuid of [...vdiUuids].sort()) {
    // walk this disk's chain oldest → newest; a run of deleted VHDs is merged into the next kept VHD
    // when that one is differencing, else removed
    let pending: string[] = []
    for (const backup of sorted) {
      const disk = backup.disks[vdiUuid]
      if (disk === undefined) continue
      const isDeleted = backup.timestamp <= (deleted[deleted.length - 1]?.timestamp ?? '')
      if (isDeleted) {
        if (!disk.differencing) {
          // a full starts a new chain: what came before it is not needed by anything after
          plan.deleteVhds.push(...pending)
          pending = []
        }
        pending.push(disk.path)
        continue
      }
      if (pending.length > 0) {
        if (disk.differencing) plan.merges.push({ vdiUuid, chain: [...pending, disk.path] })
        else plan.deleteVhds.push(...pending)
        pending = []
      }
    }
    plan.deleteVhds.push(...pending)
  }
  return plan
}

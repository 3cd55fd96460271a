/**
 * Planning of a mirror backup (pure): which backups of one VM on the source remote are copied to the
 * targets, as Xen Orchestra's mirror runner decides (@xen-orchestra/backups, _AbstractRemote):
 *
 *   - the source's backups of the job's mode are grouped by the job that made them (`jobId`);
 *   - in each group, oldest first, a backup present on EVERY target (same timestamp) resets the list:
 *     what comes before it was already mirrored (or pruned by the targets' retention); the backups after
 *     the last one present everywhere are to be copied;
 *   - the job's `filter` (XO's value-matcher pattern, e.g. `{vm: {uuid: {__or: [...]}}}`) is matched on
 *     each backup's metadata: a delta chain is copied whole when any of its backups passes (cutting it
 *     would leave a delta without its parent), a full backup only when it passes itself.
 *
 * The retention each target applies after the copies (exportRetention of the mirror's schedule, over the
 * backups the mirror wrote) is resolved here too, with XO's precedence of settings:
 * `''` < schedule < VM < target remote.
 */
import type { JsonValue } from '../common/errors.js'
import type { JobSettings } from '../queue/tasks.js'
import { matchPattern } from './smart-mode.js'

/** What planning needs of one backup (a CatalogEntry reduced to its identity and metadata). */
interface PlannedBackup {
  /** `YYYYMMDDTHHmmssZ` */
  timestamp: string
  jobId: string
  /** the backup's metadata, what the filter is matched on */
  metadata: object
}

interface TransferPlan<B extends PlannedBackup> {
  /** backups to copy, oldest first */
  transfer: B[]
  /** true when the filter left out backups that were not on the targets */
  filtered: boolean
}

function transferListOfJob<B extends PlannedBackup>(source: readonly B[], onTargets: ReadonlyMap<string, number>, nTargets: number): B[] {
  let list: B[] = []
  for (const b of [...source].sort((x, y) => (x.timestamp < y.timestamp ? -1 : x.timestamp > y.timestamp ? 1 : 0))) {
    if ((onTargets.get(b.timestamp) ?? 0) !== nTargets) list.push(b)
    else list = []
  }
  return list
}

/**
 * The backups of one VM to copy. `source`: the VM's backups of the job's mode on the source remote;
 * `targets`: for each target, the timestamps of that VM's backups of the same mode it holds.
 */
export function planVmTransfer<B extends PlannedBackup>(source: readonly B[], targets: readonly (readonly string[])[], mode: 'delta' | 'full', filter: JsonValue | undefined): TransferPlan<B> {
  const onTargets = new Map<string, number>()
  for (const timestamps of targets) for (const ts of new Set(timestamps)) onTargets.set(ts, (onTargets.get(ts) ?? 0) + 1)
  const byJob = new Map<string, B[]>()
  for (const b of source) byJob.set(b.jobId, [...(byJob.get(b.jobId) ?? []), b])
  const passes = (b: B): boolean => filter === undefined || filter === null || matchPattern(filter, b.metadata)
  const transfer: B[] = []
  let filtered = false
  for (const backups of byJob.values()) {
    const list = transferListOfJob(backups, onTargets, targets.length)
    if (list.length === 0) continue
    const kept = mode === 'delta' ? (list.some(passes) ? list : []) : list.filter(passes)
    if (kept.length < list.length) filtered = true
    transfer.push(...kept)
  }
  transfer.sort((x, y) => (x.timestamp < y.timestamp ? -1 : x.timestamp > y.timestamp ? 1 : 0))
  return { transfer, filtered }
}

/** exportRetention a target keeps of the mirror's backups: `''` < schedule < VM < remote, as XO. */
export function targetRetention(settings: Readonly<Record<string, JobSettings | undefined>>, scheduleId: string, vmUuid: string, remoteId: string, fallback: number): number {
  let retention = fallback
  for (const key of ['', scheduleId, vmUuid, remoteId]) {
    const r = settings[key]?.exportRetention
    if (r !== undefined) retention = r
  }
  return retention
}

/** XO's simple id pattern (`'id'`, `{id: 'x'}`, `{id: {__or: [...]}}`) → the ids; anything else → undefined. */
export function idsOfPattern(pattern: unknown): string[] | undefined {
  if (typeof pattern === 'string') return [pattern]
  if (typeof pattern !== 'object' || pattern === null || Array.isArray(pattern)) return undefined
  const id = (pattern as { id?: unknown }).id
  if (typeof id === 'string') return [id]
  if (typeof id === 'object' && id !== null && Array.isArray((id as { __or?: unknown }).__or)) {
    const ids = (id as { __or: unknown[] }).__or
    return ids.every((x) => typeof x === 'string') ? (ids) : undefined
  }
  return undefined
}

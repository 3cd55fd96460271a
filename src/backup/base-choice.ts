/**
 * Base choice for a delta run (pure).
 *
 * The base of a delta is a backup snapshot left on the pool by an earlier run of the same job. It can be
 * used only if its export is present on *every* target of this run (each target then chains the new
 * delta onto its own copy of that backup); the newest such snapshot wins. Otherwise the run is a full.
 * A full is also forced when the job is in `full` mode, or when `fullInterval` (N > 0) says the chain
 * has grown to N-1 deltas since its full, as XO does with `xo:backup:deltaChainLength`.
 */

export interface BackupSnapshot {
  uuid: string
  ref: string
  /** `YYYYMMDDTHHmmssZ` of the run that made it */
  datetime: string
  /** deltas exported since the last full, including this snapshot's own export (0 for a full) */
  deltaChainLength: number
}

interface BaseChoice {
  base: BackupSnapshot | undefined
  /** chain length the new snapshot gets */
  deltaChainLength: number
  /** why a full was chosen (for the task log), undefined for a delta */
  fullReason: string | undefined
}

interface BaseChoiceInput {
  mode: 'delta' | 'full'
  fullInterval: number
  /** backup snapshots of this VM made by this job */
  snapshots: readonly BackupSnapshot[]
  /** for each target id: uuids of the VM snapshots whose backup it holds */
  exportedByTarget: ReadonlyMap<string, ReadonlySet<string>>
}

export function chooseBase(input: BaseChoiceInput): BaseChoice {
  const full = (fullReason: string): BaseChoice => ({ base: undefined, deltaChainLength: 0, fullReason })
  if (input.mode === 'full') return full('the job is in full mode')
  if (input.exportedByTarget.size === 0) return full('no target')
  const newestFirst = [...input.snapshots].sort((a, b) => (a.datetime < b.datetime ? 1 : a.datetime > b.datetime ? -1 : 0))
  if (newestFirst.length === 0) return full('no earlier backup snapshot of this job on the pool')
  const targets = [...input.exportedByTarget.entries()]
  const base = newestFirst.find((s) => targets.every(([, set]) => set.has(s.uuid)))
  if (base === undefined) {
    const missing = targets.filter(([, set]) => !set.has(newestFirst[0]!.uuid)).map(([id]) => id)
    return full(`no backup snapshot is on every target (newest missing on ${missing.join(', ')})`)
  }
  const deltaChainLength = base.deltaChainLength + 1
  if (input.fullInterval > 0 && deltaChainLength >= input.fullInterval) return full(`fullInterval ${input.fullInterval} reached`)
  return { base, deltaChainLength, fullReason: undefined }
}

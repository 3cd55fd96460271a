/**
 * The `other_config` keys XO's backups write on VMs, snapshots, replicas and VDIs (we read and write the
 * same ones, so XO's next run chains onto our backups and ours onto XO's), and the one way they are read
 * back: a key's value is used only when it is a string, whatever the record's shape.
 */
import { isTimestamp } from './layout.js'

export const TAG_JOB = 'xo:backup:job'
export const TAG_SCHEDULE = 'xo:backup:schedule'
export const TAG_VM = 'xo:backup:vm'
export const TAG_DATETIME = 'xo:backup:datetime'
export const TAG_CHAIN_LENGTH = 'xo:backup:deltaChainLength'
export const TAG_EXPORTED = 'xo:backup:exported'
/** on the snapshot and its VDIs: written by code that has XO's non-NBD qcow2 export fix (always 'true') */
export const TAG_QCOW2_FIX = 'xo:backup:includeNonNbdQcow2Fix'
/** on snapshot VDIs: their own uuid (XO matches bases across replicas by it) */
export const TAG_CONTENT_KEY = 'xo:backup:contentKey'
/** in the metadata's VDI records: uuid of the base VDI their delta was computed from */
export const TAG_BASE_DELTA = 'xo:base_delta_vdi'
/** on VDIs XO imported (restores, replicas): uuid of the VDI they copy */
export const TAG_COPY_OF = 'xo:copy_of'
/** on replicas: uuid of the SR they were written to */
export const TAG_SR = 'xo:backup:sr'

/** An XAPI record (a VM, snapshot or VDI) as far as its `other_config` goes. */
interface WithOtherConfig {
  readonly other_config?: unknown
}

/** The `other_config` entry `key` of a record; undefined when it is absent or not a string. */
export function tagOf(record: WithOtherConfig, key: string): string | undefined {
  const oc = record.other_config
  if (typeof oc !== 'object' || oc === null) return undefined
  const v = (oc as Record<string, unknown>)[key]
  return typeof v === 'string' ? v : undefined
}

/**
 * `xo:backup:datetime` as `YYYYMMDDTHHmmssZ`: XO writes XAPI's format (`20261125T22:30:00Z`), our older
 * releases wrote `20261125T223000Z`; undefined when absent or not a datetime.
 */
export function tagDatetime(record: WithOtherConfig): string | undefined {
  const datetime = tagOf(record, TAG_DATETIME)?.replace(/:/g, '')
  return datetime !== undefined && isTimestamp(datetime) ? datetime : undefined
}

/** `xo:backup:deltaChainLength`: deltas exported since the last full (0 when absent or not a number). */
export function tagChainLength(record: WithOtherConfig): number {
  return Number(tagOf(record, TAG_CHAIN_LENGTH) ?? 0) || 0
}

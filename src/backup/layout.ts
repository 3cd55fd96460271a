/**
 * Xen Orchestra's on-remote layout of delta (incremental) VM backups, so XO can restore what we write
 * and we can read what XO wrote:
 *
 *   xo-vm-backups/<vmUuid>/<ts>.json                          metadata, written LAST (its presence = backup exists)
 *   xo-vm-backups/<vmUuid>/vdis/<jobId>/<vdiUuid>/<ts>.vhd    VhdFile (full or differencing)
 *   xo-vm-backups/<vmUuid>/vdis/<jobId>/<vdiUuid>/<ts>.alias.vhd → data/<ts>.vhd   VhdDirectory
 *   xo-vm-backups/<vmUuid>/cache.json.gz                      index of the VM's backups
 *
 * `<ts>` is the run's start time in UTC, `YYYYMMDDTHHmmssZ` (XO's formatFilenameDate). `vdiUuid` is the
 * uuid of the *source* VDI (the snapshot's `snapshot_of`), so a disk's chain stays in one directory.
 * Paths inside metadata (`vhds`) are relative to the VM directory, as XO writes them.
 */
import { posix } from 'node:path'
import { BackupProxyError } from '../common/errors.js'

export const BACKUP_DIR = 'xo-vm-backups'
export const METADATA_VERSION = '2.0.0'

const TS_RE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** Date → `20261125T223000Z` (UTC, second precision). */
export function formatTimestamp(date: Date | number): string {
  const iso = new Date(date).toISOString() // 2026-11-25T22:30:00.000Z
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}T${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`
}

/** `20261125T223000Z` → ms since epoch; throws on anything else. */
export function parseTimestamp(ts: string): number {
  const m = TS_RE.exec(ts)
  if (m === null) throw new BackupProxyError('E_USAGE', `"${ts}" is not a backup timestamp (expected YYYYMMDDTHHmmssZ, e.g. 20261125T223000Z)`)
  const [, y, mo, d, h, mi, s] = m.map(Number) as [number, number, number, number, number, number, number]
  const ms = Date.UTC(y, mo - 1, d, h, mi, s)
  if (formatTimestamp(ms) !== ts) throw new BackupProxyError('E_USAGE', `"${ts}" is not a valid date`)
  return ms
}

export function isTimestamp(ts: string): boolean {
  return TS_RE.test(ts)
}

export function assertUuid(what: string, uuid: string): void {
  if (!UUID_RE.test(uuid)) throw new BackupProxyError('E_USAGE', `${what} "${uuid}" is not a UUID`)
}

export function vmDir(vmUuid: string): string {
  return `${BACKUP_DIR}/${vmUuid}`
}

export function metadataPath(vmUuid: string, ts: string): string {
  return `${vmDir(vmUuid)}/${ts}.json`
}

export function cachePath(vmUuid: string): string {
  return `${vmDir(vmUuid)}/cache.json.gz`
}

/** Directory of one disk's chain, relative to the remote root. */
export function vdiDir(vmUuid: string, jobId: string, vdiUuid: string): string {
  return `${vmDir(vmUuid)}/vdis/${jobId}/${vdiUuid}`
}

/** Path of one disk's VHD of one backup relative to the VM dir (what metadata `vhds` holds). */
export function vhdRelativePath(jobId: string, vdiUuid: string, ts: string, directory: boolean): string {
  return `vdis/${jobId}/${vdiUuid}/${ts}${directory ? '.alias.vhd' : '.vhd'}`
}

/** Target of an alias (`<ts>.alias.vhd` holds this path, relative to the remote root). */
export function aliasDataPath(vmUuid: string, jobId: string, vdiUuid: string, ts: string): string {
  return `${vdiDir(vmUuid, jobId, vdiUuid)}/data/${ts}.vhd`
}

/** Remote-root path of a metadata-relative VHD path. */
export function resolveVhdPath(vmUuid: string, relative: string): string {
  const joined = posix.normalize(`${vmDir(vmUuid)}/${relative}`)
  if (!joined.startsWith(`${vmDir(vmUuid)}/`)) throw new BackupProxyError('E_BACKUP', `metadata of VM ${vmUuid} points outside its directory: ${relative}`)
  return joined
}

export function isAliasPath(path: string): boolean {
  return path.endsWith('.alias.vhd')
}

/** Timestamp of a `<ts>.vhd` / `<ts>.alias.vhd` / `<ts>.json` name, or undefined. */
export function timestampOfName(name: string): string | undefined {
  const base = posix.basename(name).replace(/(\.alias\.vhd|\.vhd|\.json)$/, '')
  return isTimestamp(base) ? base : undefined
}

/** A XAPI record as stored in metadata: plain JSON. */
export type XapiRecord = Record<string, unknown>

/**
 * XO's metadata JSON of one backup, version 2.0.0 as XO's current writers write it (we write the delta
 * form, in XO's field order: includeNonNbdQcow2Fix, isVhdDifferencing, jobId, mode, scheduleId,
 * timestamp, vbds, vdis, version, vifs, vhds, vm, vmSnapshot, vtpms, tags, size). Read: any 1.x / 2.x
 * version; the fields older writers left out get their neutral value. A `full` backup written by XO is
 * an XVA (`xva`), listed and verified but not restorable by this proxy.
 */
export interface BackupMetadata {
  version: string
  mode: 'delta' | 'full'
  jobId: string
  scheduleId: string
  /** ms since epoch of the run (same instant as the file names' timestamp) */
  timestamp: number
  vm: XapiRecord
  vmSnapshot: XapiRecord
  /** records keyed by ref, as XO writes them */
  vbds: Record<string, XapiRecord>
  vdis: Record<string, XapiRecord>
  vifs: Record<string, XapiRecord>
  /** snapshot VDI ref → VHD path relative to the VM dir */
  vhds: Record<string, string>
  /** snapshot VDI ref → whether that VHD is differencing */
  isVhdDifferencing: Record<string, boolean>
  /** bytes transferred for this backup */
  size: number
  /** XO: the disks were exported by code that has its non-NBD qcow2 fix (we always write true) */
  includeNonNbdQcow2Fix?: boolean
  /** contents of the VM's VTPMs */
  vtpms?: unknown[]
  /** long-term retention buckets (`<duration>=<bucket>`); [] when none */
  tags?: string[]
  /** a full (XVA) backup: the XVA's path relative to the VM directory */
  xva?: string
}

const VERSION_RE = /^[12]\.\d+\.\d+$/

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/**
 * Parses and checks a metadata file; refuses what we could not restore (another version, a missing
 * field) with a message naming the file and the field.
 */
export function parseMetadata(path: string, text: string): BackupMetadata {
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (error) {
    throw new BackupProxyError('E_BACKUP', `backup metadata ${path} is not JSON: ${(error as Error).message}`, { cause: error })
  }
  const fail = (field: string, what: string): never => {
    throw new BackupProxyError('E_BACKUP', `backup metadata ${path}: field "${field}" ${what}`, { fields: { path, field } })
  }
  if (!isRecord(data)) return fail('(root)', 'is not an object')
  if (typeof data.version !== 'string' || !VERSION_RE.test(data.version)) fail('version', `is ${JSON.stringify(data.version)}, versions 1.x and 2.x (current ${METADATA_VERSION}) are supported`)
  if (data.mode !== 'delta' && data.mode !== 'full') fail('mode', 'must be "delta" or "full"')
  for (const f of ['jobId', 'scheduleId'] as const) if (typeof data[f] !== 'string') fail(f, 'must be a string')
  if (typeof data.timestamp !== 'number') fail('timestamp', 'must be a number')
  const xva = data.mode === 'full' && typeof data.xva === 'string'
  for (const f of ['vm', 'vmSnapshot', ...(xva ? [] : (['vbds', 'vdis', 'vhds'] as const))]) if (!isRecord(data[f])) fail(f, 'must be an object')
  for (const [k, v] of Object.entries((data.vhds ?? {}) as Record<string, unknown>)) if (typeof v !== 'string') fail(`vhds.${k}`, 'must be a path')
  return {
    ...(data as unknown as BackupMetadata),
    vbds: isRecord(data.vbds) ? (data.vbds as Record<string, XapiRecord>) : {},
    vdis: isRecord(data.vdis) ? (data.vdis as Record<string, XapiRecord>) : {},
    vhds: isRecord(data.vhds) ? (data.vhds as Record<string, string>) : {},
    vifs: isRecord(data.vifs) ? (data.vifs as Record<string, XapiRecord>) : {},
    isVhdDifferencing: isRecord(data.isVhdDifferencing) ? (data.isVhdDifferencing as Record<string, boolean>) : {},
    size: typeof data.size === 'number' ? data.size : 0,
  }
}

/** uuid of the source VDI of a disk in a backup (from `vdis[ref].$snapshot_of$uuid`, or its path). */
export function sourceVdiUuid(metadata: BackupMetadata, vdiRef: string): string | undefined {
  const rec = metadata.vdis[vdiRef]
  const fromRecord = rec?.$snapshot_of$uuid
  if (typeof fromRecord === 'string') return fromRecord
  const path = metadata.vhds[vdiRef]
  return path === undefined ? undefined : path.split('/')[2]
}

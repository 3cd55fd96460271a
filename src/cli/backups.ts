/**
 * The backups on a remote as an operator names them, for `backups ls`, `restore` and `verify`:
 * - open a remote from the command line (its key and password from a file or the environment) and
 *   refuse an encrypted one opened without its key (E_ENCRYPTION), rather than report its encrypted
 *   files as problems and orphans;
 * - a VM by uuid or by name (the `name_label` in its backups' metadata);
 * - `--at` as `backups ls` prints it (`20261125T223000Z`), as an ISO date, or `latest`;
 * - one row per backup with XO's listing fields (from the metadata files, as XO's RemoteAdapter lists):
 *   VM name and uuid, time, mode, size, the length of the VHD chain a restore reads, encrypted or not.
 */
import { BackupProxyError, RemoteError, UsageError } from '../common/errors.js'
import type { CatalogEntry } from '../backup/catalog.js'
import type { Remote } from '../remotes/remote.js'
import { cliEncryptionKey, ENCRYPTION_KEY_ENV, type EncryptionKeyFlags } from './encryption-key.js'
import { remoteUrlWithSecret } from './secrets.js'

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export interface RemoteFlags extends EncryptionKeyFlags {
  remotePasswordFile?: string
}

interface CliRemote {
  remote: Remote
  /** the URL with its password filled in (for a VM restore's import) */
  url: string
  encryptionKey: string | undefined
}

/** Opens the remote of a command; E_ENCRYPTION when it is encrypted and no key was given. */
export async function openCliRemote(urlText: string, flags: RemoteFlags): Promise<CliRemote> {
  const encryptionKey = await cliEncryptionKey(flags, [urlText])
  const url = await remoteUrlWithSecret(urlText, flags)
  const { loadRemote } = await import('../remotes/load.js')
  const remote = await loadRemote(url, encryptionKey === undefined ? {} : { encryptionKey })
  await remote.open()
  if (encryptionKey === undefined && (await remote.exists('encryption.json').catch(() => false))) {
    await remote.close()
    throw new BackupProxyError('E_ENCRYPTION', `${remote.displayUrl} is encrypted (it has encryption.json): give its key in a file (--encryption-key-file <path>) or in the environment (${ENCRYPTION_KEY_ENV}); without it its files cannot be read`)
  }
  return { remote, url, encryptionKey }
}

export interface BackupRow {
  vm: { uuid: string; name: string }
  /** what `restore --at` takes */
  timestamp: string
  /** ISO 8601 */
  time: string
  mode: 'delta' | 'full'
  sizeBytes: number
  /** VHDs a restore of the longest disk chain reads (1 for a full or an XVA) */
  chainLength: number
  disks: number
  encrypted: boolean
  jobId: string
  scheduleId: string
  metadataPath: string
}

/** Chain length of each backup: 1 + its predecessors' while each of its disks is differencing. */
function chainLengths(entries: readonly CatalogEntry[]): number[] {
  const byDir = new Map<string, number>()
  return entries.map((e) => {
    let longest = 1
    for (const [ref, path] of Object.entries(e.metadata.vhds)) {
      const dir = path.slice(0, path.lastIndexOf('/'))
      const n = e.metadata.isVhdDifferencing[ref] === true ? (byDir.get(dir) ?? 0) + 1 : 1
      byDir.set(dir, n)
      longest = Math.max(longest, n)
    }
    return longest
  })
}

function rowsOf(vmUuid: string, entries: readonly CatalogEntry[], encrypted: boolean): BackupRow[] {
  const chains = chainLengths(entries)
  return entries.map((e, i) => ({
    vm: { uuid: vmUuid, name: typeof e.metadata.vm.name_label === 'string' ? e.metadata.vm.name_label : '' },
    timestamp: e.timestamp,
    time: new Date(e.metadata.timestamp).toISOString(),
    mode: e.metadata.xva !== undefined ? 'full' : e.metadata.mode,
    sizeBytes: e.metadata.size,
    chainLength: chains[i]!,
    disks: Object.keys(e.metadata.vhds).length,
    encrypted,
    jobId: e.metadata.jobId,
    scheduleId: e.metadata.scheduleId,
    metadataPath: e.metadataPath,
  }))
}

/** Every backup on the remote (of one VM when given), oldest first per VM. */
export async function listBackupRows(remote: Remote, encrypted: boolean, vm?: string): Promise<BackupRow[]> {
  const { listBackedUpVms, listBackups } = await import('../backup/catalog.js')
  const uuids = vm === undefined ? await listBackedUpVms(remote) : [await resolveVm(remote, vm)]
  const rows: BackupRow[] = []
  for (const uuid of uuids) rows.push(...rowsOf(uuid, await listBackups(remote, uuid), encrypted))
  return rows
}

/** A VM uuid from a uuid or a name; the error lists the VMs there are. */
export async function resolveVm(remote: Remote, nameOrUuid: string): Promise<string> {
  if (UUID_RE.test(nameOrUuid)) return nameOrUuid.toLowerCase()
  const { listBackedUpVms, listBackups } = await import('../backup/catalog.js')
  const named: { uuid: string; name: string }[] = []
  for (const uuid of await listBackedUpVms(remote)) {
    const backups = await listBackups(remote, uuid, () => undefined).catch((error: unknown) => {
      if (error instanceof RemoteError) return []
      throw error
    })
    const name = backups.at(-1)?.metadata.vm.name_label
    named.push({ uuid, name: typeof name === 'string' ? name : '' })
  }
  const matches = named.filter((v) => v.name === nameOrUuid)
  if (matches.length === 1) return matches[0]!.uuid
  if (matches.length > 1) throw new UsageError(`--vm "${nameOrUuid}" names ${matches.length} VMs on ${remote.displayUrl}: give the uuid (${matches.map((m) => m.uuid).join(', ')})`)
  const known = named.map((v) => `${v.name || '(no name)'} ${v.uuid}`).join('; ')
  throw new UsageError(`--vm "${nameOrUuid}": no VM of that name or uuid has backups on ${remote.displayUrl}${known === '' ? '' : `; VMs there: ${known}`}`)
}

/** `--at` as `backups ls` prints it, as an ISO date (UTC when no zone), or `latest` → the file timestamp; undefined = newest. */
export function normalizeAt(at: string | undefined): string | undefined {
  if (at === undefined || at === 'latest') return undefined
  if (/^\d{8}T\d{6}Z$/.test(at)) return at
  const iso = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$/.test(at) ? at.replace(' ', 'T') : undefined
  const ms = iso === undefined ? NaN : Date.parse(/Z|[+-]\d{2}:?\d{2}$/.test(iso) ? iso : `${iso}Z`)
  if (Number.isNaN(ms)) throw new UsageError(`--at "${at}": give a backup's timestamp as \`backups ls\` prints it (20261125T223000Z), an ISO date (2026-11-25T22:30:00Z), or latest`)
  const d = new Date(ms).toISOString()
  return `${d.slice(0, 4)}${d.slice(5, 7)}${d.slice(8, 10)}T${d.slice(11, 13)}${d.slice(14, 16)}${d.slice(17, 19)}Z`
}

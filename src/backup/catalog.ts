/**
 * The backups of a VM on one remote: listing (from the metadata files, the source of truth), writing a
 * backup's metadata (last, atomically — that is what makes a backup exist), and XO's `cache.json.gz`
 * index, rebuilt from the listing after every change so it never lies.
 *
 * The cache has XO's exact shape (what @xen-orchestra/backups' RemoteAdapter writes when it regenerates
 * it): a gzipped JSON object whose keys are the metadata paths with a leading slash
 * (`/xo-vm-backups/<vm>/<ts>.json`) and whose values are the metadata JSON as stored, plus
 * `_filename` (= the key), `isImmutable` (false) and `id` (= the key). XO returns a present cache as is
 * and its listing, UI formatting and retention read `_filename`/`id` from it, so an entry without them
 * makes XO fail: `checkCache` finds such a cache (our releases before this format wrote one), verify
 * reports it, and every run (or `verify --repair`) rewrites it.
 */
import { isDeepStrictEqual, promisify } from 'node:util'
import { gunzip, gzip } from 'node:zlib'
import { RemoteError } from '../common/errors.js'
import type { Remote } from '../remotes/remote.js'
import { cachePath, metadataPath, parseMetadata, timestampOfName, vmDir, type BackupMetadata } from './layout.js'

const gzipAsync = promisify(gzip)
const gunzipAsync = promisify(gunzip)

export interface CatalogEntry {
  /** `YYYYMMDDTHHmmssZ` */
  timestamp: string
  metadataPath: string
  metadata: BackupMetadata
  /** the metadata JSON exactly as stored (what the cache repeats) */
  raw: Record<string, unknown>
}

/** One value of cache.json.gz: the stored metadata plus the fields XO's RemoteAdapter adds. */
type CacheEntry = Record<string, unknown> & { _filename: string; id: string; isImmutable: boolean }

async function listNames(remote: Remote, dir: string): Promise<string[]> {
  try {
    return (await remote.list(dir)).filter((e) => !e.isDirectory).map((e) => e.path)
  } catch (error) {
    if (error instanceof RemoteError && error.code === 'ENOENT') return []
    throw error
  }
}

/** VM uuids that have a backup directory on the remote. */
export async function listBackedUpVms(remote: Remote): Promise<string[]> {
  try {
    return (await remote.list('xo-vm-backups')).filter((e) => e.isDirectory).map((e) => e.path).sort()
  } catch (error) {
    if (error instanceof RemoteError && error.code === 'ENOENT') return []
    throw error
  }
}

/**
 * Backups of a VM, oldest first. A metadata file that cannot be parsed is reported through `onInvalid`
 * (verify lists it as a problem) and skipped, never silently taken as a backup.
 */
export async function listBackups(remote: Remote, vmUuid: string, onInvalid?: (path: string, error: Error) => void): Promise<CatalogEntry[]> {
  const names = (await listNames(remote, vmDir(vmUuid))).filter((n) => n.endsWith('.json') && timestampOfName(n) !== undefined).sort()
  const out: CatalogEntry[] = []
  for (const name of names) {
    const ts = timestampOfName(name)!
    const path = metadataPath(vmUuid, ts)
    try {
      const text = (await remote.readFile(path)).toString('utf8')
      const metadata = parseMetadata(path, text)
      out.push({ timestamp: ts, metadataPath: path, metadata, raw: JSON.parse(text) as Record<string, unknown> })
    } catch (error) {
      if (onInvalid === undefined) throw error
      onInvalid(path, error as Error)
    }
  }
  return out
}

export async function writeMetadata(remote: Remote, vmUuid: string, ts: string, metadata: BackupMetadata, signal?: AbortSignal): Promise<string> {
  const path = metadataPath(vmUuid, ts)
  await remote.writeFile(path, JSON.stringify(metadata), { exclusive: true, ...(signal === undefined ? {} : { signal }) })
  return path
}

/** Key of a backup in cache.json.gz (XO: the metadata path with a leading slash). */
function cacheKey(metadataPath: string): string {
  return `/${metadataPath}`
}

/** The cache XO would regenerate for these backups. */
function buildCache(entries: readonly CatalogEntry[]): Record<string, CacheEntry> {
  const index: Record<string, CacheEntry> = {}
  for (const e of entries) {
    const key = cacheKey(e.metadataPath)
    index[key] = { ...e.raw, _filename: key, isImmutable: false, id: key }
  }
  return index
}

/** Rewrites cache.json.gz from the metadata files, in XO's shape (see the header). */
export async function updateCache(remote: Remote, vmUuid: string): Promise<void> {
  const entries = await listBackups(remote, vmUuid, () => undefined)
  await remote.writeFile(cachePath(vmUuid), await gzipAsync(JSON.stringify(buildCache(entries))))
}

async function readCache(remote: Remote, vmUuid: string): Promise<Record<string, unknown> | undefined> {
  try {
    const data = await gunzipAsync(await remote.readFile(cachePath(vmUuid)))
    return JSON.parse(data.toString('utf8')) as Record<string, unknown>
  } catch (error) {
    if (error instanceof RemoteError && error.code === 'ENOENT') return undefined
    throw error
  }
}

/**
 * What is wrong with a VM's cache.json.gz against its backups (undefined: nothing; a missing cache is
 * fine, XO regenerates it). XO trusts a present cache as is, so an unreadable one, an entry without
 * `_filename`/`id` (our old format), or one that lists other backups than the metadata files are all
 * problems; `updateCache` repairs every one of them.
 */
export async function checkCache(remote: Remote, vmUuid: string, entries: readonly CatalogEntry[]): Promise<string | undefined> {
  let cache: Record<string, unknown> | undefined
  try {
    cache = await readCache(remote, vmUuid)
  } catch (error) {
    return `unreadable (${(error as Error).message}); Xen Orchestra would ignore it`
  }
  if (cache === undefined) return undefined
  if (typeof cache !== 'object' || cache === null || Array.isArray(cache)) return 'not a JSON object'
  const stale = Object.entries(cache).filter(([key, v]) => {
    const e = v as Partial<CacheEntry> | null
    return typeof e !== 'object' || e === null || e._filename !== key || e.id !== key
  })
  if (stale.length > 0) return `old format: ${stale.length} entr${stale.length === 1 ? 'y lacks' : 'ies lack'} the _filename/id fields Xen Orchestra needs to list the backups`
  const expected = buildCache(entries)
  const keys = Object.keys(cache).sort()
  const want = Object.keys(expected).sort()
  if (keys.join('\n') !== want.join('\n')) return `lists ${keys.length} backup(s) but the remote holds ${want.length} metadata file(s)`
  // XO's own writer adds entries without isImmutable: compare the rest
  const strip = (v: unknown): unknown => {
    const { isImmutable: _ignored, ...rest } = v as CacheEntry
    return rest
  }
  for (const k of want) {
    if (!isDeepStrictEqual(strip(cache[k]), strip(expected[k]))) return `the entry ${k} differs from its metadata file`
  }
  return undefined
}

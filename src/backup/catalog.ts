/**
 * The backups of a VM on one remote: listing (from the metadata files, the source of truth), writing a
 * backup's metadata (last, atomically — that is what makes a backup exist), and XO's `cache.json.gz`
 * index (metadata path → metadata), rebuilt from the listing after every change so it never lies.
 */
import { promisify } from 'node:util'
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
}

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
      const metadata = parseMetadata(path, (await remote.readFile(path)).toString('utf8'))
      out.push({ timestamp: ts, metadataPath: path, metadata })
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

/** Rewrites cache.json.gz from the metadata files (XO's shape: metadata path → metadata). */
export async function updateCache(remote: Remote, vmUuid: string): Promise<void> {
  const entries = await listBackups(remote, vmUuid, () => undefined)
  const index: Record<string, BackupMetadata> = {}
  for (const e of entries) index[`/${e.metadataPath}`] = e.metadata
  await remote.writeFile(cachePath(vmUuid), await gzipAsync(JSON.stringify(index)))
}

export async function readCache(remote: Remote, vmUuid: string): Promise<Record<string, BackupMetadata> | undefined> {
  try {
    const data = await gunzipAsync(await remote.readFile(cachePath(vmUuid)))
    return JSON.parse(data.toString('utf8')) as Record<string, BackupMetadata>
  } catch (error) {
    if (error instanceof RemoteError && error.code === 'ENOENT') return undefined
    throw error
  }
}

/**
 * Xen Orchestra's on-remote layout of metadata backups (@xen-orchestra/backups RemoteAdapter,
 * _PoolMetadataBackup, _XoMetadataBackup), so XO lists and restores what we write and we what it wrote:
 *
 *   xo-pool-metadata-backups/<schedule id>/<pool uuid>/<ts>/data            the pool's database dump
 *   xo-pool-metadata-backups/<schedule id>/<pool uuid>/<ts>/metadata.json   jobId, jobName, pool, poolMaster,
 *                                                                           scheduleId, scheduleName, timestamp
 *   xo-config-backups/<schedule id>/<ts>/data.json (or `data` when binary)  XO's configuration export
 *   xo-config-backups/<schedule id>/<ts>/metadata.json                      data, jobId, jobName, scheduleId,
 *                                                                           scheduleName, timestamp
 *
 * A backup's id is its directory; listings give it as XO's RemoteAdapter does, with a leading slash
 * (`/xo-pool-metadata-backups/<schedule>/<pool>/<ts>`: xo-server prefixes it with the remote id), and
 * every function taking an id accepts it with or without that slash. metadata.json is
 * written last (atomically), so a directory without it is not a backup (XO's listing skips it).
 * Retention (XO's deleteOldMetadataBackups) keeps the newest `retention` timestamped directories of a
 * schedule (and pool) and removes the others.
 */
import { posix } from 'node:path'
import { BackupProxyError, errorCode } from '../common/errors.js'
import type { Remote } from '../remotes/remote.js'
import { isTimestamp } from './layout.js'

export const DIR_XO_POOL_METADATA_BACKUPS = 'xo-pool-metadata-backups'
export const DIR_XO_CONFIG_BACKUPS = 'xo-config-backups'

type MetadataBackup = Record<string, unknown> & { id: string; timestamp: number }

async function dirs(remote: Remote, path: string): Promise<string[]> {
  try {
    return (await remote.list(path)).filter((e) => e.isDirectory).map((e) => e.path).sort()
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return []
    throw error
  }
}

async function readBackup(remote: Remote, id: string, onInvalid?: (id: string, error: Error) => void): Promise<MetadataBackup | undefined> {
  try {
    const metadata = JSON.parse((await remote.readFile(`${id}/metadata.json`)).toString('utf8')) as Record<string, unknown>
    return { id: `/${id}`, ...metadata } as MetadataBackup
  } catch (error) {
    onInvalid?.(id, error as Error)
    return undefined
  }
}

const byTimestamp = (a: MetadataBackup, b: MetadataBackup): number => a.timestamp - b.timestamp

/** Pool metadata backups by pool uuid, oldest first (XO's listPoolMetadataBackups). */
export async function listPoolMetadataBackups(remote: Remote, onInvalid?: (id: string, error: Error) => void): Promise<Record<string, MetadataBackup[]>> {
  const out: Record<string, MetadataBackup[]> = {}
  for (const schedule of await dirs(remote, DIR_XO_POOL_METADATA_BACKUPS)) {
    for (const pool of await dirs(remote, `${DIR_XO_POOL_METADATA_BACKUPS}/${schedule}`)) {
      for (const ts of await dirs(remote, `${DIR_XO_POOL_METADATA_BACKUPS}/${schedule}/${pool}`)) {
        const b = await readBackup(remote, `${DIR_XO_POOL_METADATA_BACKUPS}/${schedule}/${pool}/${ts}`, onInvalid)
        if (b !== undefined) (out[pool] ??= []).push(b)
      }
    }
  }
  for (const list of Object.values(out)) list.sort(byTimestamp)
  return out
}

/** XO configuration backups, oldest first (XO's listXoMetadataBackups). */
export async function listXoMetadataBackups(remote: Remote, onInvalid?: (id: string, error: Error) => void): Promise<MetadataBackup[]> {
  const out: MetadataBackup[] = []
  for (const schedule of await dirs(remote, DIR_XO_CONFIG_BACKUPS)) {
    for (const ts of await dirs(remote, `${DIR_XO_CONFIG_BACKUPS}/${schedule}`)) {
      const b = await readBackup(remote, `${DIR_XO_CONFIG_BACKUPS}/${schedule}/${ts}`, onInvalid)
      if (b !== undefined) out.push(b)
    }
  }
  return out.sort(byTimestamp)
}

const ID_RE = /^xo-(config|pool-metadata)-backups\/\w{8}(-\w{4}){3}-\w{12}(\/\w{8}(-\w{4}){3}-\w{12})?\/\d{8}T\d{6}Z$/
const LOOSE_ID_RE = /^xo-(config-backups\/[^/]+|pool-metadata-backups\/[^/]+\/[^/]+)\/\d{8}T\d{6}Z$/

/**
 * What a metadata backup id names: `pool` (with its uuid) or `xoConfig`. XO's deleteMetadataBackup
 * accepts only UUID schedule ids; ours are any task id, so the shape is checked, not the id form.
 */
export function parseMetadataBackupId(backupId: string): { type: 'pool'; scheduleId: string; poolUuid: string; timestamp: string; dir: string } | { type: 'xoConfig'; scheduleId: string; timestamp: string; dir: string } {
  const id = backupId.replace(/^\//, '')
  if (!(ID_RE.test(id) || LOOSE_ID_RE.test(id)) || id.split('/').some((p) => p === '..' || p === '.')) {
    throw new BackupProxyError('E_USAGE', `"${id}" is not a metadata backup id: expected ${DIR_XO_POOL_METADATA_BACKUPS}/<schedule>/<pool uuid>/<YYYYMMDDTHHmmssZ> or ${DIR_XO_CONFIG_BACKUPS}/<schedule>/<YYYYMMDDTHHmmssZ> (list them with metadata list)`)
  }
  const [dir, ...rest] = id.split('/')
  if (dir === DIR_XO_CONFIG_BACKUPS) return { type: 'xoConfig', scheduleId: rest[0]!, timestamp: rest[1]!, dir: id }
  return { type: 'pool', scheduleId: rest[0]!, poolUuid: rest[1]!, timestamp: rest[2]!, dir: id }
}

/** Removes one metadata backup (its directory); E_USAGE for anything that is not a metadata backup id. */
export async function deleteMetadataBackup(remote: Remote, backupId: string): Promise<void> {
  const id = parseMetadataBackupId(backupId).dir
  if (!(await remote.exists(`${id}/metadata.json`))) throw new BackupProxyError('E_USAGE', `no metadata backup ${id} on ${remote.displayUrl} (list them with metadata list)`)
  await remote.rmtree(id)
}

/** Keeps the newest `retention` backups of `dir` (a schedule's, or a schedule's pool's), removes the others. */
export async function deleteOldMetadataBackups(remote: Remote, dir: string, retention: number): Promise<string[]> {
  const all = (await dirs(remote, dir)).filter(isTimestamp)
  const old = all.slice(0, Math.max(0, all.length - retention))
  for (const ts of old) await remote.rmtree(`${dir}/${ts}`)
  return old.map((ts) => `${dir}/${ts}`)
}

/** XO's configuration of an XO config backup: a JSON string, or binary data as base64 (XO's restore answer). */
export async function readXoConfigBackup(remote: Remote, backupId: string): Promise<string | { encoding: 'base64'; data: string }> {
  const parsed = parseMetadataBackupId(backupId)
  const id = parsed.dir
  if (parsed.type !== 'xoConfig') throw new BackupProxyError('E_USAGE', `${id} is a pool metadata backup, not an XO configuration backup`)
  const metadata = JSON.parse((await remote.readFile(`${id}/metadata.json`)).toString('utf8')) as { data?: unknown }
  const name = typeof metadata.data === 'string' ? metadata.data : 'data.json'
  const path = posix.normalize(`${id}/${name}`)
  if (!path.startsWith(`${id}/`)) throw new BackupProxyError('E_BACKUP', `${id}/metadata.json points outside its directory: ${name}`)
  const data = await remote.readFile(path)
  return path.endsWith('.json') ? data.toString('utf8') : { encoding: 'base64', data: data.toString('base64') }
}

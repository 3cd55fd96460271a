/**
 * An NFS session (one connection + the export's root handle) and walking remote-relative paths on it:
 * directory handles are looked up component by component (MKDIR when asked to create) and cached per
 * session, so a deep path costs one LOOKUP per new directory, not per operation.
 */
import { posix } from 'node:path'
import { Nfs3StatusError, type Attributes, type Nfs3Client } from './nfs3.js'
import { NFS3ERR_EXIST, NFS3ERR_NOENT, NFS3ERR_NOTDIR } from './status.js'

/** REMOVEs / RMDIRs in flight while emptying a directory */
const RMTREE_CONCURRENCY = 16

export interface Session {
  client: Nfs3Client
  root: Uint8Array
  /** WRITE size: min(maxBlockBytes, the server's wtmax) */
  wsize: number
  /** READ size: min(maxBlockBytes, the server's rtmax) */
  rsize: number
  /** directory handles by remote-relative path ('' = root) */
  dirs: Map<string, Uint8Array>
}

/** Handle of directory `rel`, with LOOKUP (or MKDIR when `create`) of each missing component. */
export async function dirHandle(s: Session, rel: string, create: boolean): Promise<Uint8Array> {
  const cached = s.dirs.get(rel)
  if (cached !== undefined) return cached
  const parts = rel.split('/')
  let i = parts.length
  while (i > 0 && !s.dirs.has(parts.slice(0, i).join('/'))) i--
  let handle = s.dirs.get(parts.slice(0, i).join('/')) ?? s.root
  for (; i < parts.length; i++) {
    const name = parts[i]!
    const here = parts.slice(0, i + 1).join('/')
    let found: { handle: Uint8Array; attributes: Attributes | undefined } | undefined
    try {
      found = await s.client.lookup(handle, name)
    } catch (error) {
      if (!(create && error instanceof Nfs3StatusError && error.status === NFS3ERR_NOENT)) throw error
    }
    if (found === undefined) {
      try {
        found = { handle: await s.client.mkdir(handle, name), attributes: undefined }
      } catch (error) {
        if (!(error instanceof Nfs3StatusError && error.status === NFS3ERR_EXIST)) throw error
        found = await s.client.lookup(handle, name) // created concurrently
      }
    }
    if (found.attributes !== undefined && !found.attributes.isDirectory) throw new Nfs3StatusError(NFS3ERR_NOTDIR, 'LOOKUP')
    handle = found.handle
    s.dirs.set(here, handle)
  }
  return handle
}

export async function parentOf(s: Session, rel: string, create: boolean): Promise<{ dir: Uint8Array; name: string; dirPath: string }> {
  const dirPath = posix.dirname(rel)
  const dp = dirPath === '.' ? '' : dirPath
  return { dir: await dirHandle(s, dp, create), name: posix.basename(rel), dirPath: dp }
}

export async function lookupPath(s: Session, rel: string): Promise<{ handle: Uint8Array; attributes: Attributes }> {
  if (rel === '') return { handle: s.root, attributes: await s.client.getattr(s.root) }
  const { dir, name } = await parentOf(s, rel, false)
  const found = await s.client.lookup(dir, name)
  return { handle: found.handle, attributes: found.attributes ?? (await s.client.getattr(found.handle)) }
}

export function forgetDirs(s: Session, rel: string): void {
  for (const key of [...s.dirs.keys()]) if (key === rel || key.startsWith(`${rel}/`)) s.dirs.delete(key)
}

/** Removes everything inside a directory (files with REMOVE, through NFS so Ganesha frees them). */
export async function emptyDir(s: Session, handle: Uint8Array): Promise<void> {
  const entries = await s.client.readdirplus(handle)
  for (let i = 0; i < entries.length; i += RMTREE_CONCURRENCY) {
    await Promise.all(
      entries.slice(i, i + RMTREE_CONCURRENCY).map(async (e) => {
        const isDirectory = e.attributes?.isDirectory ?? false
        if (isDirectory) {
          await emptyDir(s, e.handle ?? (await s.client.lookup(handle, e.name)).handle)
          await s.client.rmdir(handle, e.name)
        } else {
          await s.client.remove(handle, e.name)
        }
      }),
    )
  }
}

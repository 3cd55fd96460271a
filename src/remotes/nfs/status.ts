/**
 * NFSv3 (RFC 1813 §2.6) and MOUNT3 status codes mapped to the remote contract's POSIX codes, with the
 * server's own name kept as `fields.detail` and a message that tells the operator what to check.
 */
import { RemoteError, type PosixCode } from '../../common/errors.js'

interface StatusInfo {
  name: string
  code: PosixCode
  hint?: string
}

const NFS3_STATUS: Record<number, StatusInfo> = {
  1: { name: 'NFS3ERR_PERM', code: 'EACCES', hint: 'the uid/gid options lack the right on the export (root squash?)' },
  2: { name: 'NFS3ERR_NOENT', code: 'ENOENT' },
  5: { name: 'NFS3ERR_IO', code: 'EIO', hint: 'the server had an I/O error; check its storage' },
  6: { name: 'NFS3ERR_NXIO', code: 'EIO' },
  13: { name: 'NFS3ERR_ACCES', code: 'EACCES', hint: 'check the export permissions and the uid/gid options' },
  17: { name: 'NFS3ERR_EXIST', code: 'EEXIST' },
  18: { name: 'NFS3ERR_XDEV', code: 'EINVAL', hint: 'rename across file systems inside the export' },
  19: { name: 'NFS3ERR_NODEV', code: 'ENOENT' },
  20: { name: 'NFS3ERR_NOTDIR', code: 'ENOTDIR' },
  21: { name: 'NFS3ERR_ISDIR', code: 'EISDIR' },
  22: { name: 'NFS3ERR_INVAL', code: 'EINVAL' },
  27: { name: 'NFS3ERR_FBIG', code: 'ENOSPC', hint: 'the file is larger than the server accepts' },
  28: { name: 'NFS3ERR_NOSPC', code: 'ENOSPC', hint: 'free space on the export' },
  30: { name: 'NFS3ERR_ROFS', code: 'EACCES', hint: 'the export is read-only; set Access_Type = RW (or rw in /etc/exports)' },
  31: { name: 'NFS3ERR_MLINK', code: 'EIO' },
  63: { name: 'NFS3ERR_NAMETOOLONG', code: 'EINVAL' },
  66: { name: 'NFS3ERR_NOTEMPTY', code: 'ENOTEMPTY' },
  69: { name: 'NFS3ERR_DQUOT', code: 'ENOSPC', hint: 'the quota of the uid on the export is exhausted' },
  70: { name: 'NFS3ERR_STALE', code: 'ENOENT', hint: 'the file handle is stale: the object was removed or the export changed' },
  71: { name: 'NFS3ERR_REMOTE', code: 'EIO' },
  10001: { name: 'NFS3ERR_BADHANDLE', code: 'EINVAL' },
  10002: { name: 'NFS3ERR_NOT_SYNC', code: 'EIO' },
  10003: { name: 'NFS3ERR_BAD_COOKIE', code: 'EIO', hint: 'the directory changed while it was listed; retry' },
  10004: { name: 'NFS3ERR_NOTSUPP', code: 'EIO', hint: 'the server does not support this operation' },
  10005: { name: 'NFS3ERR_TOOSMALL', code: 'EIO' },
  10006: { name: 'NFS3ERR_SERVERFAULT', code: 'EIO', hint: 'the server failed internally; check its logs' },
  10007: { name: 'NFS3ERR_BADTYPE', code: 'EINVAL' },
  10008: { name: 'NFS3ERR_JUKEBOX', code: 'ETIMEDOUT', hint: 'the server is busy (JUKEBOX); retry later' },
}

const MOUNT3_STATUS: Record<number, StatusInfo> = {
  1: { name: 'MNT3ERR_PERM', code: 'EACCES', hint: 'this client is not allowed to mount the export (check its client list)' },
  2: { name: 'MNT3ERR_NOENT', code: 'ENOENT', hint: 'no such export; check the path in the URL' },
  5: { name: 'MNT3ERR_IO', code: 'EIO' },
  13: { name: 'MNT3ERR_ACCES', code: 'EACCES', hint: 'this client is not allowed to mount the export (check its client list)' },
  20: { name: 'MNT3ERR_NOTDIR', code: 'ENOTDIR' },
  22: { name: 'MNT3ERR_INVAL', code: 'EINVAL' },
  63: { name: 'MNT3ERR_NAMETOOLONG', code: 'EINVAL' },
  10004: { name: 'MNT3ERR_NOTSUPP', code: 'EIO' },
  10006: { name: 'MNT3ERR_SERVERFAULT', code: 'EIO', hint: 'the server failed internally; check its logs' },
}

/** Status names for messages and `fields.detail`. */
export function nfs3StatusName(status: number): string {
  return NFS3_STATUS[status]?.name ?? `NFS3 status ${status}`
}

export const NFS3ERR_NOENT = 2
export const NFS3ERR_EXIST = 17
export const NFS3ERR_NOTDIR = 20
export const NFS3ERR_STALE = 70
export const NFS3ERR_NOTSUPP = 10004

/** The RemoteError for a failed NFS3 call. */
export function nfs3Error(status: number, op: string, path: string, where: string, proc?: string): RemoteError {
  const info = NFS3_STATUS[status] ?? { name: `NFS3 status ${status}`, code: 'EIO' as const }
  const by = proc === undefined ? '' : ` (NFS ${proc})`
  return new RemoteError(info.code, `${op} "${path}" on ${where} failed: ${info.name}${by}${info.hint === undefined ? '' : `; ${info.hint}`}`, {
    fields: { op, path, detail: info.name, nfsStatus: status, ...(proc === undefined ? {} : { nfsProc: proc }) },
  })
}

/** The RemoteError for a failed MOUNT3 MNT. */
export function mount3Error(status: number, exportPath: string, where: string, exports: readonly string[] | undefined): RemoteError {
  let info = MOUNT3_STATUS[status] ?? { name: `MOUNT3 status ${status}`, code: 'EIO' as const }
  // servers (Ganesha) answer MNT3ERR_ACCES for an export that does not exist: say ENOENT when the list proves it
  if (exports !== undefined && !exports.includes(exportPath) && info.code === 'EACCES') info = { ...info, code: 'ENOENT', hint: 'no such export; check the path in the URL' }
  const list = exports === undefined ? '' : exports.length === 0 ? '; the server lists no exports' : `; the server exports: ${exports.join(', ')}`
  return new RemoteError(info.code, `mount of "${exportPath}" on ${where} failed: ${info.name}${info.hint === undefined ? '' : ` (${info.hint})`}${list}`, {
    fields: { op: 'mount', path: exportPath, detail: info.name, mountStatus: status },
  })
}

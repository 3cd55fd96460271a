/**
 * Mapping backend failures to the remote contract's errors: a RemoteError whose `code` is a POSIX code
 * (ENOENT, EEXIST, ...) whatever the backend said, with the backend's own code/status kept in
 * `fields.detail` and the original error as `cause`. Also the argument checks every remote shares
 * (read ranges), so each backend refuses the same bad input with the same message.
 */
import { POSIX_CODES, RemoteError, type PosixCode } from '../common/errors.js'
import type { ReadStreamOptions } from './remote.js'

const POSIX = new Set<string>(POSIX_CODES)

/** node:fs / socket codes that are not in our POSIX list, mapped to the nearest one. */
const ALIASES: Record<string, PosixCode> = {
  EPERM: 'EACCES',
  EROFS: 'EACCES',
  EDQUOT: 'ENOSPC',
  EPIPE: 'ECONNRESET',
  ECONNREFUSED: 'ECONNRESET',
  ECONNABORTED: 'ECONNRESET',
  EBUSY: 'EIO',
}

/** Wraps any error from a backend call into a RemoteError (returns RemoteErrors unchanged). */
export function toRemoteError(error: unknown, op: string, path: string, where: string): RemoteError {
  if (error instanceof RemoteError) return error
  const raw = (error as { code?: unknown }).code
  const detail = typeof raw === 'string' ? raw : error instanceof Error ? error.name : 'unknown'
  const code: PosixCode | 'E_REMOTE' = typeof raw === 'string' ? (POSIX.has(raw) ? (raw as PosixCode) : (ALIASES[raw] ?? 'E_REMOTE')) : 'E_REMOTE'
  const message = error instanceof Error ? error.message : String(error)
  return new RemoteError(code, `${op} "${path}" on ${where} failed: ${describe(code)} (${detail}: ${message})`, { cause: error, fields: { op, path, detail } })
}

function describe(code: PosixCode | 'E_REMOTE'): string {
  switch (code) {
    case 'ENOENT':
      return 'no such file or directory'
    case 'EEXIST':
      return 'it already exists'
    case 'ENOTEMPTY':
      return 'the directory is not empty'
    case 'EACCES':
      return 'permission denied (check the remote credentials and rights)'
    case 'EISDIR':
      return 'it is a directory'
    case 'ENOTDIR':
      return 'a parent is not a directory'
    case 'ENOSPC':
      return 'the remote is full'
    case 'ECONNRESET':
      return 'the connection to the remote failed'
    case 'ETIMEDOUT':
      return 'the remote did not answer in time'
    default:
      return 'the remote reported an error'
  }
}

/** Checks a read range; returns `{start, end}` with end undefined for "to the end". */
export function checkRange(options: ReadStreamOptions, path: string): { start: number; end: number | undefined } {
  const start = options.start ?? 0
  const end = options.end
  if (!Number.isSafeInteger(start) || start < 0) throw new RemoteError('EINVAL', `read of "${path}": start must be a non-negative integer, got ${start}`)
  if (end !== undefined && (!Number.isSafeInteger(end) || end < start - 1)) {
    throw new RemoteError('EINVAL', `read of "${path}": end must be an integer >= start - 1 (inclusive, as node:fs), got start ${start} end ${end}`)
  }
  return { start, end }
}

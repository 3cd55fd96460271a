/**
 * S3 failures mapped to the remote contract's POSIX codes: NoSuchKey/NotFound/404 → ENOENT,
 * NoSuchBucket → ENOENT with a message naming the bucket, AccessDenied/InvalidAccessKeyId/
 * SignatureDoesNotMatch/403 → EACCES, throttling and 5xx (after the SDK's retries) → EIO, network
 * errors → ECONNRESET / ETIMEDOUT, an untrusted TLS certificate → EACCES naming `allowUnauthorized`. The S3 error name and HTTP status go in `fields.detail`.
 */
import { RemoteError, type PosixCode } from '../common/errors.js'
import { toRemoteError } from './remote-errors.js'

const BY_NAME: Record<string, PosixCode> = {
  NoSuchKey: 'ENOENT',
  NotFound: 'ENOENT',
  NoSuchBucket: 'ENOENT',
  NoSuchUpload: 'ENOENT',
  AccessDenied: 'EACCES',
  InvalidAccessKeyId: 'EACCES',
  SignatureDoesNotMatch: 'EACCES',
  Forbidden: 'EACCES',
  EntityTooLarge: 'ENOSPC',
  QuotaExceeded: 'ENOSPC',
  InvalidArgument: 'EINVAL',
  TimeoutError: 'ETIMEDOUT',
  RequestTimeout: 'ETIMEDOUT',
}

export function toS3RemoteError(error: unknown, op: string, path: string, where: string): RemoteError {
  if (error instanceof RemoteError) return error
  const name = (error as { name?: unknown }).name
  const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode
  const sysCode = (error as { code?: unknown }).code
  let code: PosixCode | 'E_REMOTE' | undefined = typeof name === 'string' ? BY_NAME[name] : undefined
  if (code === undefined && status !== undefined) {
    if (status === 404) code = 'ENOENT'
    else if (status === 403 || status === 401) code = 'EACCES'
    else if (status >= 500 || status === 429 || status === 503) code = 'EIO'
  }
  if (code === undefined && typeof sysCode === 'string' && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(sysCode)) {
    const cause = new Error(error instanceof Error ? error.message : String(error))
    cause.name = sysCode
    return new RemoteError('EACCES', `${op} "${path}" on ${where} failed: the server's TLS certificate is not trusted (${sysCode}); install its CA, or set allowUnauthorized=true on this remote if you accept the risk`, {
      cause,
      fields: { op, path, detail: sysCode },
    })
  }
  if (code === undefined && typeof sysCode === 'string') return toRemoteError(error, op, path, where)
  code ??= 'E_REMOTE'
  const detail = `${typeof name === 'string' ? name : 'error'}${status === undefined ? '' : ` HTTP ${status}`}`
  const message = error instanceof Error ? error.message : String(error)
  const hint = name === 'NoSuchBucket' ? ': the bucket does not exist, create it first' : code === 'EACCES' ? ': check the access key, secret key and bucket policy' : ''
  // the SDK error drags the whole HTTP response (sockets, agents) along: keep only what explains it
  const cause = new Error(message)
  cause.name = typeof name === 'string' ? name : 'S3Error'
  return new RemoteError(code, `${op} "${path}" on ${where} failed (${detail}: ${message})${hint}`, { cause, fields: { op, path, detail } })
}

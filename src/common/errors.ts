/**
 * Errors of backup-proxy.
 *
 * Every error the proxy raises on purpose is a `BackupProxyError` (or a subclass) with a stable `code`
 * that operators, the orchestrator and tests match on; the message says what to do. Errors cross two
 * boundaries: a worker thread's MessagePort and a Redis job (BullMQ stores `failedReason` and our
 * return value as JSON). `serializeError` turns any thrown value into plain JSON that keeps the code,
 * message, fields and the whole `cause` chain; `deserializeError` rebuilds the matching class on the
 * other side so `instanceof` and `code` checks keep working.
 *
 * Remote (filesystem-like) errors carry a POSIX code (`ENOENT`, `EEXIST`, ...) as their `code`, the
 * same convention node:fs uses, whatever the backend (S3, NFS, SMB) said; the backend's own status goes
 * into `fields.detail`.
 */

export const ERROR_CODES = {
  E_CONFIG_INVALID: 'configuration is invalid',
  E_USAGE: 'bad command-line usage',
  E_TASK_INVALID: 'task payload is invalid',
  E_REMOTE_URL: 'remote URL is invalid',
  E_REMOTE: 'remote operation failed',
  E_VHD_CORRUPT: 'VHD data is corrupt',
  E_VHD_UNSUPPORTED: 'VHD feature is not supported',
  E_XAPI: 'XAPI call failed',
  E_CANCELLED: 'operation was cancelled',
  E_TIMEOUT: 'operation timed out',
  E_NOT_AVAILABLE: 'feature is not available yet',
  E_REDIS: 'Redis is unusable',
  E_REDIS_MODE: 'Redis mode does not match the server',
  E_REDIS_EVICTION: 'Redis may evict queued jobs',
  E_REDIS_SENTINEL: 'the sentinels do not know the master',
  E_ENCRYPTION: 'encryption failed',
  E_ENCRYPTED_RANGE: 'ranged access refused on an encrypted remote',
  E_BACKUP: 'backup failed',
  E_DUPLICATE_JOB: 'job is already queued or running',
  E_SHUTDOWN_STUCK: 'a forced stop did not finish',
  E_JOB_RUNNING: 'the backup job is already running',
  E_API_REQUEST: 'API request is malformed',
  E_API_CERT: 'API certificate cannot be made',
  E_STALLED: 'a job stalled more than maxStalledCount times',
  E_INTERNAL: 'internal error',
  E_NBD_UNREACHABLE: 'the NBD server cannot be reached',
  E_NBD_TLS: 'the NBD server certificate does not match',
  E_NBD_NEGOTIATION: 'the NBD server refused the export',
  E_NBD_READ: 'an NBD read failed',
  E_CBT: 'changed block tracking is unusable',
  E_XVA_CORRUPT: 'XVA (full backup) data is corrupt',
  E_NO_PROXY: 'no live proxy serves the queue',
} as const

type ProxyErrorCode = keyof typeof ERROR_CODES

/** POSIX-style codes every remote maps its backend errors to. */
export const POSIX_CODES = [
  'ENOENT',
  'EEXIST',
  'ENOTEMPTY',
  'EACCES',
  'EISDIR',
  'ENOTDIR',
  'EIO',
  'ENOSPC',
  'EINVAL',
  'ECONNRESET',
  'ETIMEDOUT',
] as const
export type PosixCode = (typeof POSIX_CODES)[number]

export type ErrorCode = ProxyErrorCode | PosixCode

/** JSON-safe values kept in `fields` (they must survive structured clone and JSON). */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue }
type ErrorFields = Record<string, JsonValue>

interface BackupProxyErrorOptions {
  cause?: unknown
  fields?: ErrorFields
}

export class BackupProxyError extends Error {
  readonly code: ErrorCode
  readonly fields: ErrorFields

  constructor(code: ErrorCode, message: string, options: BackupProxyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.fields = options.fields ?? {}
  }

  override get name(): string {
    return this.constructor.name
  }

  toJSON(): SerializedError {
    return serializeError(this)
  }
}

/** An invalid configuration: `issues` lists every problem, each naming its key. */
export class ConfigInvalidError extends BackupProxyError {
  constructor(
    readonly issues: readonly { path: string; message: string }[],
    options: BackupProxyErrorOptions = {},
  ) {
    super(
      'E_CONFIG_INVALID',
      `invalid configuration:\n${issues.map((i) => `  - ${i.path}: ${i.message}`).join('\n')}`,
      { ...options, fields: { ...options.fields, issues: issues.map((i) => ({ ...i })) } },
    )
  }
}

export class UsageError extends BackupProxyError {
  constructor(message: string, options: BackupProxyErrorOptions = {}) {
    super('E_USAGE', message, options)
  }
}

export class TaskInvalidError extends BackupProxyError {
  constructor(message: string, options: BackupProxyErrorOptions = {}) {
    super('E_TASK_INVALID', message, options)
  }
}

export class RemoteUrlError extends BackupProxyError {
  constructor(message: string, options: BackupProxyErrorOptions = {}) {
    super('E_REMOTE_URL', message, options)
  }
}

/** A remote operation failed; `code` is a POSIX code when the failure maps to one, else `E_REMOTE`. */
export class RemoteError extends BackupProxyError {
  constructor(code: PosixCode | 'E_REMOTE', message: string, options: BackupProxyErrorOptions = {}) {
    super(code, message, options)
  }
}

export class VhdCorruptError extends BackupProxyError {
  constructor(message: string, options: BackupProxyErrorOptions = {}) {
    super('E_VHD_CORRUPT', message, options)
  }
}

export class XapiError extends BackupProxyError {
  constructor(message: string, options: BackupProxyErrorOptions = {}) {
    super('E_XAPI', message, options)
  }
  /** The XAPI error code (`SESSION_AUTHENTICATION_FAILED`, `HANDLE_INVALID`, ...), when XAPI gave one. */
  get xapiCode(): string | undefined {
    const c = this.fields.xapiCode
    return typeof c === 'string' ? c : undefined
  }
}

export class CancelledError extends BackupProxyError {
  constructor(message = 'the operation was cancelled', options: BackupProxyErrorOptions = {}) {
    super('E_CANCELLED', message, options)
  }
}

export class TimeoutError extends BackupProxyError {
  constructor(message: string, options: BackupProxyErrorOptions = {}) {
    super('E_TIMEOUT', message, options)
  }
}

class NotAvailableError extends BackupProxyError {
  constructor(feature: string) {
    super('E_NOT_AVAILABLE', `${feature} is not available yet in this version of backup-proxy`, {
      fields: { feature },
    })
  }
}

/** Wire form of an error: plain JSON, safe for postMessage and Redis. */
export interface SerializedError {
  name: string
  code?: string
  message: string
  stack?: string
  fields?: ErrorFields
  cause?: SerializedError
}

const MAX_CAUSE_DEPTH = 8

/** ioredis puts the failed command on its errors (`command: { name, args }`); AUTH and HELLO carry a password. */
function isAuthCommand(value: object): boolean {
  const { name, args } = value as { name?: unknown; args?: unknown }
  return typeof name === 'string' && /^(auth|hello)$/i.test(name) && Array.isArray(args)
}

function toJsonValue(value: unknown, depth = 0): JsonValue {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value
  if (typeof value === 'number') return Number.isFinite(value) ? value : String(value)
  if (typeof value === 'bigint') return value.toString()
  if (depth > 4) return '[truncated]'
  if (Array.isArray(value)) return value.map((v) => toJsonValue(v, depth + 1))
  if (typeof value === 'object') {
    if (isAuthCommand(value)) return { name: (value as { name: string }).name, args: ['***'] }
    const out: Record<string, JsonValue> = {}
    for (const [k, v] of Object.entries(value)) {
      if (v !== undefined && typeof v !== 'function') out[k] = toJsonValue(v, depth + 1)
    }
    return out
  }
  return typeof value === 'symbol' ? value.toString() : typeof value
}

/** Turns any thrown value into JSON, keeping code, fields and the cause chain. */
export function serializeError(error: unknown, depth = 0): SerializedError {
  if (error instanceof Error) {
    const out: SerializedError = { name: error.name, message: error.message }
    const code = (error as { code?: unknown }).code
    if (typeof code === 'string') out.code = code
    if (error.stack !== undefined) out.stack = error.stack
    if (error instanceof BackupProxyError) {
      if (Object.keys(error.fields).length > 0) out.fields = error.fields
    } else {
      // foreign errors (node:fs, undici, ...) often carry useful own properties: keep the JSON-safe ones
      const extra: ErrorFields = {}
      for (const [k, v] of Object.entries(error)) {
        if (k !== 'code' && k !== 'cause' && k !== 'stack' && v !== undefined) extra[k] = toJsonValue(v)
      }
      if (Object.keys(extra).length > 0) out.fields = extra
    }
    if (error.cause !== undefined && depth < MAX_CAUSE_DEPTH) out.cause = serializeError(error.cause, depth + 1)
    return out
  }
  return { name: 'NonError', code: 'E_INTERNAL', message: typeof error === 'string' ? error : JSON.stringify(toJsonValue(error)) }
}

const CLASS_BY_NAME: Record<string, new (...args: never[]) => BackupProxyError> = {
  BackupProxyError,
  ConfigInvalidError,
  UsageError,
  TaskInvalidError,
  RemoteUrlError,
  RemoteError,
  VhdCorruptError,
  XapiError,
  CancelledError,
  TimeoutError,
  NotAvailableError,
}

function isSerializedError(value: unknown): value is SerializedError {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { message?: unknown }).message === 'string' &&
    typeof (value as { name?: unknown }).name === 'string'
  )
}

/**
 * Rebuilds an error from its wire form. Known classes come back as themselves (same prototype, code and
 * fields); errors with a code but no known class come back as `BackupProxyError` with that code; the
 * cause chain is rebuilt recursively.
 */
export function deserializeError(data: unknown): Error {
  if (!isSerializedError(data)) return new BackupProxyError('E_INTERNAL', `unrecognized error payload: ${JSON.stringify(toJsonValue(data))}`)
  const cause = data.cause === undefined ? undefined : deserializeError(data.cause)
  let error: Error
  const ctor = CLASS_BY_NAME[data.name]
  if (ctor !== undefined || (data.code !== undefined && /^E_[A-Z_]+$/.test(data.code))) {
    // create without running the constructor: subclass constructors take different arguments
    const proto = (ctor ?? BackupProxyError).prototype as object
    error = Object.create(proto) as BackupProxyError
    Object.defineProperty(error, 'message', { value: data.message, writable: true, configurable: true })
    Object.defineProperty(error, 'code', { value: data.code ?? 'E_INTERNAL', enumerable: true })
    Object.defineProperty(error, 'fields', { value: data.fields ?? {}, enumerable: true })
    if (ctor === ConfigInvalidError) {
      const issues = (data.fields?.issues ?? []) as unknown as { path: string; message: string }[]
      Object.defineProperty(error, 'issues', { value: issues, enumerable: true })
    }
  } else {
    error = new Error(data.message)
    Object.defineProperty(error, 'name', { value: data.name, configurable: true })
    if (data.code !== undefined) Object.defineProperty(error, 'code', { value: data.code, enumerable: true })
    // extra own properties of a foreign error (a DOMException's too), never over the ones set above
    for (const [key, value] of Object.entries(data.fields ?? {})) {
      if (!['name', 'message', 'stack', 'cause', 'code'].includes(key)) Object.defineProperty(error, key, { value, writable: true, enumerable: true, configurable: true })
    }
  }
  if (data.stack !== undefined) Object.defineProperty(error, 'stack', { value: data.stack, writable: true, configurable: true })
  if (cause !== undefined) Object.defineProperty(error, 'cause', { value: cause, writable: true, configurable: true })
  return error
}

/** Gets the code of any thrown value (ours, node's, or none). */
export function errorCode(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null) {
    const code = (error as { code?: unknown }).code
    if (typeof code === 'string') return code
  }
  return undefined
}

/** Normalizes an unknown thrown value to an Error without losing it. */
export function toError(error: unknown): Error {
  if (error instanceof Error) return error
  return new BackupProxyError('E_INTERNAL', typeof error === 'string' ? error : `non-error thrown: ${JSON.stringify(toJsonValue(error))}`, {
    fields: { value: toJsonValue(error) },
  })
}

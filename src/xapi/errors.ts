/**
 * Maps what `xen-api`, undici and node:http throw into the project's errors: XAPI failures become
 * `XapiError` (code E_XAPI) keeping the XAPI code and params in `fields`, with a message that tells the
 * operator what to do; network failures become `XapiError` marked `transient` (retryable); promise-toolbox
 * cancellations become `CancelledError`. Causes that could carry a session id are not attached.
 */
import { CancelledError, XapiError, errorCode } from '../common/errors.js'

const HINTS: Record<string, string> = {
  SESSION_AUTHENTICATION_FAILED: 'check the user and password configured for this pool',
  SESSION_INVALID: 'the XAPI session expired or the toolstack restarted; the client logs in again, retry the operation',
  HANDLE_INVALID: 'the object no longer exists on the pool (deleted meanwhile?); refresh and retry',
  UUID_INVALID: 'no object with this UUID on the pool; check the job configuration',
  VDI_IN_USE: 'the disk is in use by another operation; retry later',
  MESSAGE_METHOD_UNKNOWN: 'this XAPI version does not provide the method; upgrade the pool or the proxy',
  OPERATION_BLOCKED: 'the operation is blocked on this VM (blocked_operations); unblock it or skip the VM',
  TASK_CANCELLED: 'the task was cancelled',
  SR_BACKEND_FAILURE_44: 'the storage repository is full; free space on the SR',
  VM_BAD_POWER_STATE: 'the VM is not in the power state the operation needs',
}

const TRANSIENT_NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
])

/** `networkCode` of a call refused by xen-api while it renews its session (nothing was sent). */
export const SESSION_RENEWING = 'SESSION_RENEWING'

function isTransientNetworkCode(code: string | undefined): boolean {
  return code !== undefined && TRANSIENT_NETWORK_CODES.has(code)
}

/** Builds the XapiError for an XAPI error code and its params. */
export function xapiFailure(xapiCode: string, params: readonly string[], context: { what: string; method?: string; httpStatus?: number }): XapiError {
  const hint = HINTS[xapiCode] ?? 'see the XAPI error code in the pool logs'
  const fields: Record<string, string | number | string[]> = { xapiCode, params: [...params] }
  if (context.method !== undefined) fields.method = context.method
  if (context.httpStatus !== undefined) fields.httpStatus = context.httpStatus
  return new XapiError(`${context.what} failed with ${xapiCode}(${params.join(', ')}): ${hint}`, { fields })
}

function isXenApiError(error: unknown): error is { code: string; params: unknown[] } {
  return typeof error === 'object' && error !== null && Array.isArray((error as { params?: unknown }).params) && typeof (error as { code?: unknown }).code === 'string'
}

/** Normalizes anything thrown by an XAPI call. */
export function toXapiError(error: unknown, what: string, method?: string): Error {
  if (error instanceof XapiError || error instanceof CancelledError) return error
  if (isXenApiError(error)) return xapiFailure(error.code, error.params.map(String), { what, ...(method === undefined ? {} : { method }) })
  if (error instanceof Error && (error.name === 'Cancel' || error.name === 'AbortError')) {
    return new CancelledError(`${what} was cancelled`, { cause: error })
  }
  const tls = tlsFailure(error, what)
  if (tls !== undefined) return tls
  const code = errorCode(error) ?? errorCode((error as { cause?: unknown } | undefined)?.cause)
  if (code === 'ERR_ASSERTION' && error instanceof Error && error.stack?.includes('_sessionCall') === true) {
    // xen-api clears its session id while it logs in again after SESSION_INVALID, and a call made in
    // that window fails an assertion before anything is sent: safe to retry once the login is done
    return new XapiError(`${what} failed: the XAPI session is being renewed; it is retried`, {
      fields: { networkCode: SESSION_RENEWING, transient: true, ...(method === undefined ? {} : { method }) },
    })
  }
  if (isTransientNetworkCode(code)) {
    return new XapiError(`${what} failed: cannot reach XAPI (${code}); check the pool address and the network, it is retried`, {
      cause: error,
      fields: { networkCode: code ?? '', transient: true, ...(method === undefined ? {} : { method }) },
    })
  }
  const message = error instanceof Error ? error.message : String(error)
  return new XapiError(`${what} failed: ${message}`, { cause: error, fields: method === undefined ? {} : { method } })
}

const TLS_CODE = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL/

/** A TLS verification failure: not transient, the operator must fix the certificate or allow it. */
export function tlsFailure(error: unknown, what: string): XapiError | undefined {
  const code = errorCode(error) ?? errorCode((error as { cause?: unknown } | undefined)?.cause)
  if (code === undefined || !TLS_CODE.test(code)) return undefined
  return new XapiError(`${what} failed: the TLS certificate of XAPI was rejected (${code}); install a trusted certificate on the pool or set allowUnauthorized`, {
    cause: error,
    fields: { networkCode: code },
  })
}

/** Whether an error (already mapped) is a network failure worth retrying. */
export function isTransient(error: unknown): boolean {
  return error instanceof XapiError && error.fields.transient === true
}

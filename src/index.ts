/**
 * Package root (`import ... from 'backup-proxy'`): the enqueue library an orchestrator uses to hand tasks
 * to proxies and follow them (the same as `backup-proxy/queue`), plus the error classes and their codes so
 * callers can branch on `error.code`. The proxy itself is a process (`backup-proxy serve`), not a library.
 */
export * from './queue/index.js'
export { BackupProxyError, CancelledError, ConfigInvalidError, RemoteError, TaskInvalidError, TimeoutError, deserializeError, errorCode, serializeError, ERROR_CODES, type ErrorCode } from './common/errors.js'
export { VERSION } from './version.js'

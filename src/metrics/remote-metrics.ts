/**
 * Turns a Remote's `op` and `bytes` events (src/remotes/remote.ts RemoteEvents) into metrics, labelled
 * by the remote's id from the task (or its kind), never its URL:
 *   bytes write → backup_proxy_bytes_written_total{remote}
 *   bytes read  → backup_proxy_remote_bytes_read_total{remote}
 *   op          → backup_proxy_remote_operations_total{remote,op,status}
 *                 backup_proxy_remote_operation_duration_seconds{remote,op}
 *                 backup_proxy_remote_up{remote} (main thread only)
 *
 * The target is the main thread's ProxyMetrics or, inside a worker thread, its ThreadMetricsRecorder
 * (the remote then lives in the thread and its counts travel as deltas). `remote_up` is a gauge the
 * main thread owns, so it is only maintained when attached to ProxyMetrics: an answer from the remote,
 * even a logical refusal (ENOENT, EEXIST, ...), means up; a connection, I/O or permission failure, or
 * any failure of `open` or `test`, means down.
 *
 * The main thread's registry is recognised by its shape, not by `instanceof`: this module runs in every
 * stream thread, and importing the registry's class there would load prom-client (and its OpenTelemetry
 * dependency) into each thread for nothing — ~1.5 MiB of V8 heap per thread (bench backup-rss).
 */
import type { Remote, RemoteBytesEvent, RemoteOpEvent } from '../remotes/remote.js'
import { validateLabelValue } from './catalogue.js'
import type { ProxyMetrics } from './registry.js'
import type { ThreadMetricsRecorder } from './thread-recorder.js'

/** Error codes that mean the remote could not be reached or used at all. */
const DOWN_CODES: ReadonlySet<string> = new Set(['ECONNRESET', 'ETIMEDOUT', 'ECONNREFUSED', 'EHOSTUNREACH', 'EIO', 'EACCES', 'E_REMOTE'])

export type RemoteEventSource = Pick<Remote, 'on' | 'off'>

/**
 * Where remote metrics go: the main thread's ProxyMetrics, or a thread-side recorder of deltas (a
 * ThreadMetricsRecorder, or any object with its `inc` and `observe`, such as a pool task's context).
 */
type RemoteMetricsTarget = ProxyMetrics | Pick<ThreadMetricsRecorder, 'inc' | 'observe'>

/** the main thread's ProxyMetrics (it records and owns gauges), else a thread-side recorder */
function isProxyMetrics(target: RemoteMetricsTarget): target is ProxyMetrics {
  return 'record' in target && 'setGauge' in target
}

/**
 * Subscribes to the remote's events; returns a function that unsubscribes. Throws a RangeError when
 * `remoteId` is not a valid label value (a URL, a path, too long).
 */
export function attachRemoteMetrics(remote: RemoteEventSource, target: RemoteMetricsTarget, remoteId: string): () => void {
  const problem = validateLabelValue('remote', remoteId)
  if (problem !== undefined) throw new RangeError(`attachRemoteMetrics: ${problem}; pass the remote's id from the task or its kind, never its URL`)
  const main = isProxyMetrics(target) ? target : undefined
  const inc = (metric: string, labels: Record<string, string>, value: number): void => {
    if (main !== undefined) main.record({ metric, kind: 'counter', labels, value })
    else (target as Pick<ThreadMetricsRecorder, 'inc'>).inc(metric, labels, value)
  }
  const observe = (metric: string, labels: Record<string, string>, value: number): void => {
    if (main !== undefined) main.record({ metric, kind: 'histogram', labels, value })
    else (target as Pick<ThreadMetricsRecorder, 'observe'>).observe(metric, labels, value)
  }

  const onBytes = (event: RemoteBytesEvent): void => {
    if (event.bytes <= 0) return
    inc(event.direction === 'write' ? 'backup_proxy_bytes_written_total' : 'backup_proxy_remote_bytes_read_total', { remote: remoteId }, event.bytes)
  }
  const onOp = (event: RemoteOpEvent): void => {
    inc('backup_proxy_remote_operations_total', { remote: remoteId, op: event.op, status: event.ok ? 'ok' : 'error' }, 1)
    observe('backup_proxy_remote_operation_duration_seconds', { remote: remoteId, op: event.op }, event.durationMs / 1000)
    if (main !== undefined) {
      // a failed open or test means the remote is not usable, whatever the code (a missing root is ENOENT)
      const down = !event.ok && (event.op === 'open' || event.op === 'test' || event.code === undefined || DOWN_CODES.has(event.code))
      main.setGauge('backup_proxy_remote_up', { remote: remoteId }, down ? 0 : 1)
    }
  }
  remote.on('bytes', onBytes)
  remote.on('op', onOp)
  return () => {
    remote.off('bytes', onBytes)
    remote.off('op', onOp)
  }
}

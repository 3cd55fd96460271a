/**
 * The engine's one edge to metrics inside a pool thread: the `DiskMetrics` a thread task (disk export,
 * XVA export, mirror copy) hands its transfer, turning bytes read, its remotes' `op`/`bytes` events
 * (labelled by the task's remote id) and the export's duration into the task context's metric deltas.
 * The runner's thread has no remote to attach to, so the task does it here.
 */
import { attachRemoteMetrics } from '../metrics/remote-metrics.js'
import type { DiskMetrics, StreamTaskContext } from './ports.js'

/** `exportDuration: false`: a transfer that is not an export (a mirror copy) records no export duration. */
export function threadMetrics(ctx: Pick<StreamTaskContext, 'counter' | 'observe'>, options: { exportDuration: boolean } = { exportDuration: true }): DiskMetrics {
  return {
    bytesRead: (n) => ctx.counter('backup_proxy_bytes_read_total', {}, n),
    attachRemote: (remote, remoteId) => attachRemoteMetrics(remote, { inc: (m, l, v) => ctx.counter(m, l ?? {}, v), observe: ctx.observe }, remoteId),
    exportDuration: options.exportDuration ? (s) => ctx.observe('backup_proxy_disk_export_duration_seconds', {}, s) : () => undefined,
  }
}

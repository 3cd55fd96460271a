/**
 * Pool thread task `backup.disk`: one disk's export (disk-export.ts) inside a Piscina thread. Input and
 * output are plain data (structured clone); progress and metric deltas go through the task context;
 * the context's signal is the cooperative cancel.
 */
import { attachRemoteMetrics } from '../metrics/remote-metrics.js'
import { runDiskExport } from './disk-export.js'
import type { DiskExportInput, DiskExportResult, DiskProgress, StreamTask } from './ports.js'

const task: StreamTask<DiskExportInput, DiskExportResult, DiskProgress> = (input, ctx) =>
  runDiskExport(input, {
    signal: ctx.signal,
    onProgress: (p) => ctx.progress(p),
    metrics: {
      bytesRead: (n) => ctx.counter('backup_proxy_bytes_read_total', {}, n),
      // op and bytes events of each remote become deltas labelled by the task's remote id
      attachRemote: (remote, remoteId) => attachRemoteMetrics(remote, { inc: (m, l, v) => ctx.counter(m, l ?? {}, v), observe: ctx.observe }, remoteId),
      exportDuration: (s) => ctx.observe('backup_proxy_disk_export_duration_seconds', {}, s),
    },
  })

export default task

/**
 * Pool thread task `backup.xva`: one full backup's XVA transfer (xva-export.ts) inside a Piscina thread.
 * Input and output are plain data; progress and metric deltas go through the task context; the context's
 * signal is the cooperative cancel.
 */
import { attachRemoteMetrics } from '../metrics/remote-metrics.js'
import { runXvaExport, type XvaExporter, type XvaExportInput, type XvaExportResult } from './xva-export.js'
import type { ProgressOf, StreamTask } from './ports.js'

const task: StreamTask<XvaExportInput, XvaExportResult, ProgressOf<XvaExporter>> = (input, ctx) =>
  runXvaExport(input, {
    signal: ctx.signal,
    onProgress: (p) => ctx.progress(p),
    metrics: {
      bytesRead: (n) => ctx.counter('backup_proxy_bytes_read_total', {}, n),
      attachRemote: (remote, remoteId) => attachRemoteMetrics(remote, { inc: (m, l, v) => ctx.counter(m, l ?? {}, v), observe: ctx.observe }, remoteId),
      exportDuration: (s) => ctx.observe('backup_proxy_disk_export_duration_seconds', {}, s),
    },
  })

export default task

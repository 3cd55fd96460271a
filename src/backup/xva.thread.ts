/**
 * Pool thread task `backup.xva`: one full backup's XVA transfer (xva-export.ts) inside a Piscina thread.
 * Input and output are plain data; progress and metric deltas go through the task context; the context's
 * signal is the cooperative cancel.
 */
import { runXvaExport, type XvaExporter, type XvaExportInput, type XvaExportResult } from './xva-export.js'
import type { ProgressOf, StreamTask } from './ports.js'
import { threadMetrics } from './thread-metrics.js'

const task: StreamTask<XvaExportInput, XvaExportResult, ProgressOf<XvaExporter>> = (input, ctx) =>
  runXvaExport(input, {
    signal: ctx.signal,
    onProgress: (p) => ctx.progress(p),
    metrics: threadMetrics(ctx),
  })

export default task

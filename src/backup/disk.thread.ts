/**
 * Pool thread task `backup.disk`: one disk's export (disk-export.ts) inside a Piscina thread. Input and
 * output are plain data (structured clone); progress and metric deltas go through the task context;
 * the context's signal is the cooperative cancel.
 */
import { runDiskExport } from './disk-export.js'
import type { DiskExportInput, DiskExportResult, DiskProgress, StreamTask } from './ports.js'
import { threadMetrics } from './thread-metrics.js'

const task: StreamTask<DiskExportInput, DiskExportResult, DiskProgress> = (input, ctx) =>
  runDiskExport(input, {
    signal: ctx.signal,
    onProgress: (p) => ctx.progress(p),
    metrics: threadMetrics(ctx),
  })

export default task

/**
 * Pool thread task `backup.restoreDisk`: one disk of a restore (disk-import.ts) inside a Piscina thread,
 * so decompression, decryption and VHD assembly of a restore leave the main thread free. The context's
 * signal is the cooperative cancel; progress goes through the task context.
 */
import { runDiskImport, type DiskImportInput, type DiskImportProgress, type DiskImportResult } from './disk-import.js'
import type { StreamTask } from './ports.js'

const task: StreamTask<DiskImportInput, DiskImportResult, DiskImportProgress> = (input, ctx) =>
  runDiskImport(input, { signal: ctx.signal, onProgress: (p) => ctx.progress({ sentBytes: p.sentBytes, totalBytes: p.totalBytes }) })

export default task

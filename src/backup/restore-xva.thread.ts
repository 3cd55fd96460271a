/**
 * Pool thread task `backup.restoreXva`: one full backup's XVA uploaded to XAPI's VM import, its checksum
 * verified on the way (xva-import.ts). Plain data in and out; progress through the task context; the
 * context's signal is the cooperative cancel.
 */
import { runXvaImport, type XvaImporter, type XvaImportInput, type XvaImportResult } from './xva-import.js'
import type { ProgressOf, StreamTask } from './ports.js'

const task: StreamTask<XvaImportInput, XvaImportResult, ProgressOf<XvaImporter>> = (input, ctx) =>
  runXvaImport(input, { signal: ctx.signal, onProgress: (p) => ctx.progress(p) })

export default task

/**
 * Pool thread task `mirror.copy`: one VHD or one file of a mirrored backup copied from the source remote
 * to the targets (mirror-copy.ts) inside a Piscina thread; progress and metric deltas go through the task
 * context, its signal is the cooperative cancel.
 */
import { copyFile, copyVhd, type CopyFileInput, type CopyOptions, type CopyResult, type CopyVhdInput } from './mirror-copy.js'
import type { MirrorCopier } from './mirror-backup.js'
import type { ProgressOf, StreamTask } from './ports.js'
import { threadMetrics } from './thread-metrics.js'

export type MirrorCopyInput = ({ op: 'vhd' } & CopyVhdInput) | ({ op: 'file' } & CopyFileInput)

const task: StreamTask<MirrorCopyInput, CopyResult, ProgressOf<MirrorCopier>> = (input, ctx) => {
  const options: CopyOptions = {
    signal: ctx.signal,
    onProgress: (p) => ctx.progress(p),
    metrics: threadMetrics(ctx, { exportDuration: false }),
  }
  return input.op === 'vhd' ? copyVhd(input, options) : copyFile(input, options)
}

export default task

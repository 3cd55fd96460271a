/**
 * Pool thread task `mirror.copy`: one VHD or one file of a mirrored backup copied from the source remote
 * to the targets (mirror-copy.ts) inside a Piscina thread; progress and metric deltas go through the task
 * context, its signal is the cooperative cancel.
 */
import { attachRemoteMetrics } from '../metrics/remote-metrics.js'
import { copyFile, copyVhd, type CopyFileInput, type CopyOptions, type CopyResult, type CopyVhdInput } from './mirror-copy.js'
import type { MirrorCopier } from './mirror-backup.js'
import type { ProgressOf, StreamTask } from './ports.js'

export type MirrorCopyInput = ({ op: 'vhd' } & CopyVhdInput) | ({ op: 'file' } & CopyFileInput)

const task: StreamTask<MirrorCopyInput, CopyResult, ProgressOf<MirrorCopier>> = (input, ctx) => {
  const options: CopyOptions = {
    signal: ctx.signal,
    onProgress: (p) => ctx.progress(p),
    metrics: {
      bytesRead: (n) => ctx.counter('backup_proxy_bytes_read_total', {}, n),
      attachRemote: (remote, remoteId) => attachRemoteMetrics(remote, { inc: (m, l, v) => ctx.counter(m, l ?? {}, v), observe: ctx.observe }, remoteId),
      exportDuration: () => undefined,
    },
  }
  return input.op === 'vhd' ? copyVhd(input, options) : copyFile(input, options)
}

export default task

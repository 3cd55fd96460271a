/** The DiskExporter port over the stream pool: each disk runs as the `backup.disk` thread task. */
import type { DiskExporter, DiskProgress, StreamTaskRunner } from './ports.js'

export function poolExporter(pool: StreamTaskRunner): DiskExporter {
  return (input, { signal, onProgress }) =>
    pool.run('backup.disk', input, {
      signal,
      ...(onProgress === undefined ? {} : { onProgress: (p) => onProgress(p as unknown as DiskProgress) }),
    })
}

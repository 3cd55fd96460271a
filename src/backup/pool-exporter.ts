/** The DiskExporter port over the stream pool: each disk runs as the `backup.disk` thread task. */
import type { StreamPool } from '../workers/pool.js'
import type { DiskExporter, DiskProgress } from './ports.js'

export function poolExporter(pool: StreamPool): DiskExporter {
  return (input, { signal, onProgress }) =>
    pool.run('backup.disk', input, {
      signal,
      ...(onProgress === undefined ? {} : { onProgress: (p) => onProgress(p as unknown as DiskProgress) }),
    })
}

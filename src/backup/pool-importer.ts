/** The DiskImporter port over the stream pool: each restored disk runs as the `backup.restoreDisk` thread task. */
import type { DiskImporter, DiskImportProgress } from './disk-import.js'
import type { StreamTaskRunner } from './ports.js'

export function poolImporter(pool: StreamTaskRunner): DiskImporter {
  return (input, { signal, onProgress }) =>
    pool.run('backup.restoreDisk', input, {
      signal,
      ...(onProgress === undefined ? {} : { onProgress: (p) => onProgress(p as unknown as DiskImportProgress) }),
    })
}

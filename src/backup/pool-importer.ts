/**
 * The importer ports over the stream pool: each restored disk runs as the `backup.restoreDisk` thread
 * task, a full backup's XVA as `backup.restoreXva`.
 */
import type { DiskImporter } from './disk-import.js'
import type { StreamTaskRunner } from './ports.js'
import type { XvaImporter } from './xva-import.js'

export function poolImporter(pool: StreamTaskRunner): DiskImporter {
  return (input, { signal, onProgress }) =>
    pool.run('backup.restoreDisk', input, {
      signal,
      ...(onProgress === undefined ? {} : { onProgress }),
    })
}

/** The XvaImporter port over the stream pool: a full backup's restore runs as the `backup.restoreXva` thread task. */
export function poolXvaImporter(pool: StreamTaskRunner): XvaImporter {
  return (input, { signal, onProgress }) =>
    pool.run('backup.restoreXva', input, {
      signal,
      ...(onProgress === undefined ? {} : { onProgress }),
    })
}

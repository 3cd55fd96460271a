/** The DiskExporter port over the stream pool: each disk runs as the `backup.disk` thread task. */
import type { DiskExporter, StreamTaskRunner } from './ports.js'
import type { XvaExporter } from './xva-export.js'

export function poolExporter(pool: StreamTaskRunner): DiskExporter {
  return (input, { signal, onProgress }) =>
    pool.run('backup.disk', input, {
      signal,
      ...(onProgress === undefined ? {} : { onProgress }),
    })
}

/** The XvaExporter port over the stream pool: each full backup's transfer runs as the `backup.xva` thread task. */
export function poolXvaExporter(pool: StreamTaskRunner): XvaExporter {
  return (input, { signal, onProgress }) =>
    pool.run('backup.xva', input, {
      signal,
      ...(onProgress === undefined ? {} : { onProgress }),
    })
}

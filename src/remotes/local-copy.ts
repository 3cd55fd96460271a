/**
 * The local remote's copy between two local remotes (Remote.copyFrom): the kernel copies the file
 * (fs.copyFile: libuv's copy_file_range, or sendfile where the file system has none), so its bytes never
 * pass through the process, into a hidden temporary beside the final name (`.<name>.<random>.tmp`); the
 * temporary's size is checked against the source's, fsynced, then published as LocalWriteStream publishes
 * (publishTemporary: rename, or link+unlink when exclusive, and the directory fsynced). On any failure or an aborted signal
 * the temporary is removed and the final name is never touched. The copy itself is one call: an abort is
 * seen once it returns. Local files are published by rename, never written in place, so the source's size
 * does not change under the copy.
 */
import { constants } from 'node:fs'
import { copyFile, mkdir, open, stat, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import { RemoteError } from '../common/errors.js'
import { publishTemporary } from './local-writer.js'

export interface LocalCopy {
  /** the source file, every symlink resolved (checked inside its root by the caller) */
  from: string
  tmpPath: string
  finalPath: string
  exclusive: boolean
  signal?: AbortSignal
}

/** Copies, checks and publishes; returns the bytes copied. */
export async function copyLocalFile(o: LocalCopy): Promise<number> {
  const s = await stat(o.from)
  if (s.isDirectory()) throw new RemoteError('EISDIR', `copy "${o.from}": it is a directory`)
  await mkdir(dirname(o.tmpPath), { recursive: true })
  let published = false
  try {
    await copyFile(o.from, o.tmpPath, constants.COPYFILE_EXCL)
    o.signal?.throwIfAborted()
    const fh = await open(o.tmpPath, 'r+')
    try {
      const { size } = await fh.stat()
      if (size !== s.size) throw new RemoteError('EIO', `copy "${o.from}": ${size} bytes copied, the file has ${s.size}`)
      await fh.sync()
    } finally {
      await fh.close()
    }
    o.signal?.throwIfAborted()
    await publishTemporary(o, () => (published = true))
    return s.size
  } finally {
    if (!published) await unlink(o.tmpPath).catch(() => undefined) // absent when copyFile failed early
  }
}

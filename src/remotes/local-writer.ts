/**
 * The local remote's atomic writer: a Writable that writes to a hidden temporary beside the final name
 * (`.<name>.<random>.tmp`), and on end() fsyncs it, publishes it (rename, or link+unlink when the write
 * is exclusive so an existing file is never replaced) and fsyncs the directory. 'finish' fires only
 * once the final name is durable and visible. destroy(err) or an aborted signal closes and deletes the
 * temporary; the final name is never touched.
 */
import { link, mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { Writable } from 'node:stream'

interface LocalWriterOptions {
  finalPath: string
  tmpPath: string
  exclusive: boolean
  signal?: AbortSignal
  /** called with each chunk's size once it is written */
  onBytes: (bytes: number) => void
  /** maps fs errors to RemoteErrors */
  mapError: (error: unknown) => Error
}

export class LocalWriteStream extends Writable {
  readonly #o: LocalWriterOptions
  #fh: FileHandle | undefined
  #published = false

  constructor(options: LocalWriterOptions) {
    super({ highWaterMark: 1024 * 1024, ...(options.signal === undefined ? {} : { signal: options.signal }) })
    this.#o = options
  }

  override _construct(callback: (error?: Error | null) => void): void {
    const run = async () => {
      await mkdir(dirname(this.#o.tmpPath), { recursive: true })
      this.#fh = await open(this.#o.tmpPath, 'wx')
    }
    run().then(() => callback(), (e: unknown) => callback(this.#o.mapError(e)))
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#writeAll([chunk]).then(() => callback(), (e: unknown) => callback(this.#o.mapError(e)))
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    this.#writeAll(chunks.map((c) => c.chunk)).then(() => callback(), (e: unknown) => callback(this.#o.mapError(e)))
  }

  async #writeAll(buffers: Buffer[]): Promise<void> {
    const fh = this.#fh
    if (fh === undefined) throw new Error('write after close')
    let total = 0
    for (const b of buffers) total += b.length
    let { bytesWritten } = await fh.writev(buffers)
    // short writes are rare (full disk, signals): finish them one buffer at a time
    while (bytesWritten < total) {
      let skip = bytesWritten
      const rest: Buffer[] = []
      for (const b of buffers) {
        if (skip >= b.length) skip -= b.length
        else {
          rest.push(skip > 0 ? b.subarray(skip) : b)
          skip = 0
        }
      }
      const r = await fh.writev(rest)
      if (r.bytesWritten === 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' })
      bytesWritten += r.bytesWritten
    }
    this.#o.onBytes(total)
  }

  override _final(callback: (error?: Error | null) => void): void {
    const run = async () => {
      const fh = this.#fh
      if (fh === undefined) throw new Error('final without file')
      await fh.sync()
      this.#fh = undefined
      await fh.close()
      await publishTemporary(this.#o, () => (this.#published = true))
    }
    run().then(() => callback(), (e: unknown) => callback(this.#o.mapError(e)))
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const run = async () => {
      const fh = this.#fh
      this.#fh = undefined
      if (fh !== undefined) await fh.close().catch(() => undefined) // closing a failed handle: the write error is what matters
      if (!this.#published) {
        try {
          await unlink(this.#o.tmpPath)
        } catch (e) {
          if ((e as { code?: unknown }).code !== 'ENOENT') throw e
        }
      }
    }
    run().then(
      () => callback(error),
      (e: unknown) => callback(error ?? this.#o.mapError(e)),
    )
  }
}

/**
 * Publishes a complete, fsynced temporary under its final name — rename, or link + unlink when exclusive
 * (an existing file is never replaced: EEXIST) — then fsyncs the directory. `onPublished` is called as
 * soon as the final name exists, so a failure after it leaves the temporary alone. Shared by the writer
 * above and the kernel copy (local-copy.ts).
 */
export async function publishTemporary(o: { tmpPath: string; finalPath: string; exclusive: boolean }, onPublished: () => void): Promise<void> {
  if (o.exclusive) {
    await link(o.tmpPath, o.finalPath) // EEXIST when the final name exists: never replaced
    onPublished()
    await unlink(o.tmpPath)
  } else {
    await rename(o.tmpPath, o.finalPath)
    onPublished()
  }
  const dir = await open(dirname(o.finalPath), 'r')
  try {
    await dir.sync()
  } finally {
    await dir.close()
  }
}

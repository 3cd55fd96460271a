/**
 * The SMB remote's atomic writer. The temporary (`.<name>.<random>.tmp` beside the final name) is
 * opened by the remote before the stream is returned; this Writable keeps up to `window` WRITE
 * requests in flight, so throughput is not bound by round trips. Whole `ioSize` slices of a chunk are
 * sent straight from the producer's memory (no copy) and the producer is called back once the kernel
 * has them; smaller pieces (small chunks, heads and tails around whole slices) are gathered in a pool
 * of at most `window + 1` buffers. The producer waits (backpressure) while `window` WRITEs are in
 * flight, or while the socket has not taken its data.
 *
 * end(): the last partial buffer is written, all WRITEs are awaited, then FLUSH (the server's fsync),
 * then one compound request does SET_INFO FileRenameInformation on the same handle (publishes the file
 * under its final name; ReplaceIfExists = !exclusive, so an exclusive write fails with EEXIST and
 * replaces nothing) and CLOSE; 'finish' fires after that, so the final name is complete when visible.
 *
 * destroy(err), an aborted signal or a failed WRITE: in-flight WRITEs are awaited, then the temporary is
 * marked delete-pending and closed. When the connection itself died, the server closed the handle and
 * the temporary stays: it is handed to `onOrphan` and the remote deletes it on its next connection.
 */
import { Writable } from 'node:stream'
import { RemoteError } from '../../common/errors.js'
import type { CreateParams, SmbClient } from './client.js'
import { Access, CreateOptions, Disposition, FileInfoClass, type FileId } from './wire.js'

interface SmbWriterOptions {
  client: SmbClient
  fileId: FileId
  /** SMB path of the temporary (`\`-separated, from the share root) */
  tmpPath: string
  /** SMB path of the final name */
  finalPath: string
  /** remote-relative path, for messages */
  displayPath: string
  exclusive: boolean
  ioSizeBytes: number
  window: number
  signal?: AbortSignal
  onBytes: (bytes: number) => void
  /** the temporary could not be removed (connection lost): remove it later */
  onOrphan: (tmpPath: string) => void
}

/** FileRenameInformation (SMB2 form): ReplaceIfExists, reserved, RootDirectory = 0, name length, name. */
export function renameInfo(target: string, replace: boolean): Buffer {
  const name = Buffer.from(target, 'utf16le')
  const b = Buffer.alloc(20 + name.length)
  b.writeUInt8(replace ? 1 : 0, 0)
  b.writeUInt32LE(name.length, 16)
  name.copy(b, 20)
  return b
}

export const DELETE_PENDING = Buffer.from([1])

const DELETE_BY_NAME: CreateParams = { access: Access.DELETE | Access.SYNCHRONIZE, disposition: Disposition.OPEN, options: CreateOptions.NON_DIRECTORY_FILE }

export class SmbWriteStream extends Writable {
  readonly #o: SmbWriterOptions
  readonly #free: Buffer[] = []
  readonly #inFlight = new Set<Promise<void>>()
  #current: Buffer | undefined
  #filled = 0
  #offset = 0
  #failure: Error | undefined
  #published = false
  #handleOpen = true

  constructor(options: SmbWriterOptions) {
    super({ highWaterMark: options.ioSizeBytes, ...(options.signal === undefined ? {} : { signal: options.signal }) })
    this.#o = options
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#accept(chunk).then(() => callback(), (e: unknown) => callback(e as Error))
  }

  /**
   * Sends `chunk`: whole `ioSize` slices go out as WRITEs straight from the chunk (no copy) and the
   * producer is called back once they are in the kernel's socket buffer (it may then reuse the chunk);
   * what does not fill a whole WRITE (a small chunk, a tail, a head topping up a pool buffer that is at
   * least half full) is copied into a pool buffer, sent once that buffer is full or at end(). A pool
   * buffer less than half full when a large chunk comes is sent as a short WRITE first, so a stream of
   * large chunks after a small head (a VHD: footer, header and BAT, then 2 MiB + 512 B blocks) is not
   * copied slice after slice.
   */
  async #accept(chunk: Buffer): Promise<void> {
    const io = this.#o.ioSizeBytes
    let pos = 0
    if (this.#current !== undefined) {
      if (chunk.length >= io && this.#filled < io / 2) {
        // a small head (e.g. a VHD's header before its blocks) goes out as a short WRITE rather than
        // shifting every later slice of large chunks by copying
        await this.#slot()
        this.#dispatch()
      } else {
        pos = Math.min(chunk.length, io - this.#filled)
        await this.#copy(chunk, 0, pos)
      }
    }
    const sent: Promise<void>[] = []
    while (chunk.length - pos >= io) {
      await this.#slot()
      sent.push(this.#send(chunk.subarray(pos, pos + io), undefined))
      pos += io
    }
    if (pos < chunk.length) await this.#copy(chunk, pos, chunk.length)
    await Promise.all(sent)
    if (this.#failure !== undefined) throw this.#failure
  }

  /** Copies chunk[from, to) into pool buffers, sending each one that fills up. */
  async #copy(chunk: Buffer, from: number, to: number): Promise<void> {
    let pos = from
    while (pos < to) {
      if (this.#failure !== undefined) throw this.#failure
      if (this.#current === undefined) {
        this.#current = this.#free.pop() ?? Buffer.allocUnsafe(this.#o.ioSizeBytes)
        this.#filled = 0
      }
      const n = chunk.copy(this.#current, this.#filled, pos, to)
      pos += n
      this.#filled += n
      if (this.#filled === this.#current.length) {
        await this.#slot()
        this.#dispatch()
      }
    }
  }

  /** Waits until fewer than `window` WRITEs are in flight (backpressure). */
  async #slot(): Promise<void> {
    while (this.#inFlight.size >= this.#o.window) {
      await Promise.race(this.#inFlight)
      if (this.#failure !== undefined) throw this.#failure
    }
    if (this.#failure !== undefined) throw this.#failure
  }

  /** Sends the current pool buffer (if it holds anything) as one WRITE. */
  #dispatch(): void {
    const buffer = this.#current
    if (buffer === undefined || this.#filled === 0) return
    const data = buffer.subarray(0, this.#filled)
    this.#current = undefined
    this.#filled = 0
    void this.#send(data, buffer)
  }

  /**
   * One WRITE of `data` at the next offset. Resolves once the data was handed to the kernel (or the
   * WRITE failed, which fails the stream); the WRITE's completion is tracked in #inFlight. A pool
   * buffer goes back to the free list when its WRITE completes.
   */
  #send(data: Buffer, pooled: Buffer | undefined): Promise<void> {
    const offset = this.#offset
    this.#offset += data.length
    let onSent: () => void = () => undefined
    const sent = new Promise<void>((resolve) => (onSent = resolve))
    const p: Promise<void> = this.#o.client.write(this.#o.fileId, offset, data, this.#o.displayPath, { onSent }).then(
      () => {
        this.#inFlight.delete(p)
        if (pooled !== undefined) this.#free.push(pooled)
        this.#o.onBytes(data.length)
      },
      (e: unknown) => {
        this.#inFlight.delete(p)
        this.#failure ??= e instanceof Error ? e : new Error(String(e))
        // the producer may be idle (nothing to call back): fail the stream now
        this.destroy(this.#failure)
      },
    )
    this.#inFlight.add(p)
    return Promise.race([sent, p])
  }

  async #drain(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.all(this.#inFlight)
    if (this.#failure !== undefined) throw this.#failure
  }

  override _final(callback: (error?: Error | null) => void): void {
    const run = async () => {
      this.#dispatch()
      await this.#drain()
      const { client, fileId } = this.#o
      // FLUSH alone first: a chained rename would run even if the FLUSH failed (servers only cascade
      // CREATE failures), and nothing unflushed may be published
      await client.flush(fileId, this.#o.displayPath)
      // then one round trip: rename onto the final name, CLOSE
      const { closed, error } = await client.setInfoClose(fileId, FileInfoClass.RENAME, renameInfo(this.#o.finalPath, !this.#o.exclusive), this.#o.displayPath)
      if (closed) this.#handleOpen = false
      if (error !== undefined) {
        if (error instanceof RemoteError && error.code === 'EEXIST') {
          throw new RemoteError('EEXIST', `exclusive write of "${this.#o.displayPath}" refused: the file already exists`, { cause: error, fields: error.fields })
        }
        throw error instanceof Error ? error : new RemoteError('EIO', `publishing "${this.#o.displayPath}" failed`, { cause: error })
      }
      this.#published = true
      if (!closed) throw new RemoteError('EIO', `"${this.#o.displayPath}" was published but its handle did not close; the connection is probably failing`)
    }
    run().then(() => callback(), (e: unknown) => callback(e as Error))
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const run = async () => {
      // let in-flight WRITEs settle so the delete is the last operation on the handle
      await Promise.allSettled(this.#inFlight)
      const { client, fileId } = this.#o
      if (!this.#handleOpen) {
        // closed by a failed publish (the rename was refused): remove the temporary by name
        if (!this.#published && !client.closed) await client.createSetInfoClose(this.#o.tmpPath, DELETE_BY_NAME, FileInfoClass.DISPOSITION, DELETE_PENDING, this.#o.displayPath)
        return
      }
      this.#handleOpen = false
      if (client.closed) {
        if (!this.#published) this.#o.onOrphan(this.#o.tmpPath)
        return
      }
      try {
        if (!this.#published) await client.setInfo(fileId, FileInfoClass.DISPOSITION, DELETE_PENDING, this.#o.displayPath)
        await client.close(fileId, this.#o.displayPath)
      } catch (cleanupError) {
        if (!this.#published) this.#o.onOrphan(this.#o.tmpPath)
        throw cleanupError
      }
    }
    run().then(
      () => callback(error),
      // the original error is what the caller must see; the cleanup failure is its cause
      (e: unknown) => callback(error ?? (e as Error)),
    )
  }
}

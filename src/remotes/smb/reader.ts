/**
 * The SMB remote's read stream: READ requests of `ioSize` bytes, up to `window` in flight, pushed in
 * file order. A new READ is issued only while the consumer wants data (push() returned true), so a slow
 * consumer holds at most `window` buffers. The handle is opened by the remote (errors such as ENOENT
 * surface from createReadStream itself) and closed when the stream ends or is destroyed.
 */
import { Readable } from 'node:stream'
import { RemoteError } from '../../common/errors.js'
import type { SmbClient } from './client.js'
import type { FileId } from './wire.js'

interface SmbReaderOptions {
  client: SmbClient
  fileId: FileId
  displayPath: string
  /** first byte */
  start: number
  /** one past the last byte */
  endExclusive: number
  ioSizeBytes: number
  window: number
  signal?: AbortSignal
  onBytes: (bytes: number) => void
}

interface PendingRead {
  offset: number
  length: number
  result: Promise<Buffer>
}

export class SmbReadStream extends Readable {
  readonly #o: SmbReaderOptions
  readonly #queue: PendingRead[] = []
  #next: number
  #wanted = false
  #pumping = false
  #closed = false

  constructor(options: SmbReaderOptions) {
    super({ highWaterMark: options.ioSizeBytes, ...(options.signal === undefined ? {} : { signal: options.signal }) })
    this.#o = options
    this.#next = options.start
  }

  #issue(offset: number, length: number): PendingRead {
    const result = this.#o.client.read(this.#o.fileId, offset, length, this.#o.displayPath)
    result.catch(() => undefined) // observed in #pump, in order; avoid an unhandled rejection meanwhile
    return { offset, length, result }
  }

  #fill(): void {
    while (this.#queue.length < this.#o.window && this.#next < this.#o.endExclusive) {
      const length = Math.min(this.#o.ioSizeBytes, this.#o.endExclusive - this.#next)
      this.#queue.push(this.#issue(this.#next, length))
      this.#next += length
    }
  }

  override _read(): void {
    this.#wanted = true
    if (!this.#pumping) void this.#pump()
  }

  async #pump(): Promise<void> {
    this.#pumping = true
    try {
      while (this.#wanted && !this.destroyed) {
        this.#fill()
        const head = this.#queue[0]
        if (head === undefined) {
          this.push(null)
          return
        }
        const data = await head.result
        if (this.destroyed) return
        this.#queue.shift()
        if (data.length === 0) {
          throw new RemoteError('EIO', `read of "${this.#o.displayPath}" hit the end of the file at ${head.offset}, before the expected ${this.#o.endExclusive} bytes: the file shrank while being read`)
        }
        if (data.length < head.length) {
          // short read: fetch the rest before anything queued after it
          this.#queue.unshift(this.#issue(head.offset + data.length, head.length - data.length))
        }
        this.#o.onBytes(data.length)
        this.#wanted = this.push(data)
      }
    } catch (error) {
      this.destroy(error as Error)
    } finally {
      this.#pumping = false
    }
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.#closed || this.#o.client.closed) {
      callback(error)
      return
    }
    this.#closed = true
    const inFlight = this.#queue.splice(0).map((r) => r.result)
    Promise.allSettled(inFlight)
      .then(() => this.#o.client.close(this.#o.fileId, this.#o.displayPath))
      .then(
        () => callback(error),
        (e: unknown) => callback(error ?? (e as Error)),
      )
  }
}

/**
 * The NFS remote's byte streams. `NfsWriteStream` feeds a WriteWindow (pipelined UNSTABLE WRITEs +
 * COMMIT) and publishes on end(): 'finish' is emitted only after every byte is committed and the
 * temporary is renamed (or linked, for exclusive writes) to its final name; destroy() or an error
 * discards the temporary. `NfsReadStream` keeps up to `window` READs in flight and pushes their data in
 * order, stopping when push() asks it to (backpressure).
 */
import { Readable, Writable } from 'node:stream'
import { CancelledError } from '../../common/errors.js'
import { WriteWindow, type WindowIo, type WriteWindowOptions } from './write-window.js'

interface NfsWriteStreamOptions extends WriteWindowOptions {
  io: WindowIo
  /** makes the committed temporary visible under its final name */
  publish: () => Promise<void>
  /** removes the temporary (after an error or destroy) */
  discard: () => Promise<void>
  /** maps transport errors to RemoteErrors naming the path */
  mapError: (error: unknown) => Error
  signal?: AbortSignal | undefined
}

export class NfsWriteStream extends Writable {
  private readonly window: WriteWindow
  private published = false

  constructor(private readonly opts: NfsWriteStreamOptions) {
    super({ highWaterMark: opts.blockBytes })
    this.window = new WriteWindow(opts.io, opts)
    const signal = opts.signal
    if (signal !== undefined) {
      const onAbort = () => this.destroy(new CancelledError(`write to ${opts.label} was cancelled`, { cause: signal.reason }))
      if (signal.aborted) queueMicrotask(onAbort)
      else {
        signal.addEventListener('abort', onAbort, { once: true })
        this.once('close', () => signal.removeEventListener('abort', onAbort))
      }
    }
  }

  /** bytes accepted by write() so far */
  get bytesAccepted(): number {
    return this.window.size
  }

  /** bytes sent again because the server's verifier changed */
  get resentBytes(): number {
    return this.window.resentBytes
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    try {
      this.window.push(chunk)
    } catch (error) {
      callback(this.opts.mapError(error))
      return
    }
    if (this.window.ready()) callback()
    else this.window.whenReady().then(() => callback(), (error: unknown) => callback(this.opts.mapError(error)))
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.window
      .finish()
      .then(() => this.opts.publish())
      .then(
        () => {
          this.published = true
          callback()
        },
        (error: unknown) => callback(this.opts.mapError(error)),
      )
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.published) {
      callback(error)
      return
    }
    this.window.abort(error ?? new CancelledError(`write to ${this.opts.label} was destroyed before end()`))
    // the temporary must go whatever happened; a failure to remove it is handled by the remote (retried on reconnect)
    this.opts.discard().then(
      () => callback(error),
      () => callback(error),
    )
  }
}

interface NfsReadStreamOptions {
  read: (offset: number, count: number) => Promise<{ data: Uint8Array; eof: boolean }>
  start: number
  /** exclusive end (already clamped to the file size) */
  end: number
  blockBytes: number
  window: number
  mapError: (error: unknown) => Error
  label: string
  signal?: AbortSignal | undefined
}

export class NfsReadStream extends Readable {
  private readonly queue: Promise<Uint8Array[]>[] = []
  private nextOffset: number
  private pumping = false

  constructor(private readonly opts: NfsReadStreamOptions) {
    super({ highWaterMark: opts.blockBytes })
    this.nextOffset = opts.start
    const signal = opts.signal
    if (signal !== undefined) {
      const onAbort = () => this.destroy(new CancelledError(`read from ${opts.label} was cancelled`, { cause: signal.reason }))
      if (signal.aborted) queueMicrotask(onAbort)
      else {
        signal.addEventListener('abort', onAbort, { once: true })
        this.once('close', () => signal.removeEventListener('abort', onAbort))
      }
    }
  }

  override _read(): void {
    if (this.pumping) return
    this.pumping = true
    this.pump().catch((error: unknown) => {
      this.pumping = false
      this.destroy(this.opts.mapError(error))
    })
  }

  /** Reads [offset, offset+count) completely (servers may return less than asked); stops at EOF. */
  private async readFully(offset: number, count: number): Promise<Uint8Array[]> {
    const parts: Uint8Array[] = []
    let done = 0
    while (done < count) {
      const { data, eof } = await this.opts.read(offset + done, count - done)
      if (data.length > 0) parts.push(data)
      done += data.length
      if (eof || data.length === 0) break
    }
    return parts
  }

  private fill(): void {
    while (this.queue.length < this.opts.window && this.nextOffset < this.opts.end) {
      const count = Math.min(this.opts.blockBytes, this.opts.end - this.nextOffset)
      const p = this.readFully(this.nextOffset, count)
      p.catch(() => undefined) // observed when it reaches the head of the queue
      this.queue.push(p)
      this.nextOffset += count
    }
  }

  private async pump(): Promise<void> {
    for (;;) {
      this.fill()
      const head = this.queue.shift()
      if (head === undefined) {
        this.pumping = false
        this.push(null)
        return
      }
      const parts = await head
      if (this.destroyed) return
      let more = true
      for (const part of parts) more = this.push(part)
      if (!more) {
        // cleared before returning so that the next _read() (possibly synchronous) pumps again
        this.pumping = false
        return
      }
    }
  }
}

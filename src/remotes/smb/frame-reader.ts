/**
 * The receiving half of an SMB2 direct-TCP connection: the socket, opened with net's `onread`, and the
 * framing (a 4-byte big-endian transport length, then the frame) done without a copy in JS where it
 * matters. Socket reads land either in one reusable buffer (transport lengths, SMB2 headers, small
 * frames; no allocation per read) or, while a large frame (a READ response) is being received, straight
 * in that frame's remaining space: reads stop at the end of the next SMB2 header, so once a large
 * frame's length is known the kernel copies its data in place. Whole frames go to the sink
 * (connection.ts), which splits compounds and matches responses.
 */
import { connect, type Socket } from 'node:net'
import { RemoteError } from '../../common/errors.js'
import { connectionError } from './errors.js'
import { HEADER_SIZE } from './wire.js'

/** frames at least this large (READ responses) are received straight into their own memory */
const DIRECT_READ_MIN_BYTES = 64 * 1024
/** smaller frames, and every transport length + SMB2 header, are read into one reused buffer */
const READ_BUFFER_BYTES = DIRECT_READ_MIN_BYTES + 4 + HEADER_SIZE

/** Where whole frames go. */
export interface FrameSink {
  /** one frame, without its transport length; what it throws goes to `onError` */
  onFrame(frame: Buffer): void
  onError(error: Error): void
  /** once true, the rest of a read is dropped */
  readonly closed: boolean
  /** counts the received bytes copied in JS (the rest the kernel wrote in place) */
  readonly stats: { copiedBytes: number }
}

export class FrameReader {
  sink: FrameSink | undefined
  private readonly shared = Buffer.allocUnsafe(READ_BUFFER_BYTES)
  // the 4-byte length, then the frame being filled
  private readonly lengthBytes = Buffer.alloc(4)
  private lengthFilled = 0
  private frame: Buffer | undefined
  private frameFilled = 0

  /**
   * Where the next socket read should land: the rest of a large frame being received; else the shared
   * buffer, but only up to the end of the next frame's transport length and SMB2 header. So once a
   * large frame's length is known, the data after its header lands in the frame itself (one copy, by
   * the kernel), and small frames cost one read each.
   */
  readTarget(): Uint8Array {
    const f = this.frame
    if (f !== undefined && f.length >= DIRECT_READ_MIN_BYTES) return f.subarray(this.frameFilled)
    const upToNextHeader = (f === undefined ? 4 - this.lengthFilled : f.length - this.frameFilled + 4) + HEADER_SIZE
    return this.shared.subarray(0, Math.min(upToNextHeader, this.shared.length))
  }

  /** `n` bytes were read into `buf` (what readTarget returned). */
  onRead(n: number, buf: Uint8Array): void {
    const f = this.frame
    if (buf.buffer !== this.shared.buffer && f !== undefined && buf.buffer === f.buffer && buf.byteOffset === f.byteOffset + this.frameFilled) {
      // the kernel wrote straight into the frame
      this.frameFilled += n
      if (this.frameFilled === f.length) this.completeFrame()
      return
    }
    this.onData(Buffer.from(buf.buffer, buf.byteOffset, n))
  }

  private completeFrame(): void {
    const frame = this.frame
    if (frame === undefined) return
    this.frame = undefined
    try {
      this.sink?.onFrame(frame)
    } catch (error) {
      this.sink?.onError(error instanceof Error ? error : new Error(String(error)))
    }
  }

  /**
   * Called with a view of the reusable read buffer: nothing may keep a reference to `view`. Every byte
   * is copied once, straight into the frame it belongs to.
   */
  private onData(view: Buffer): void {
    let pos = 0
    while (pos < view.length) {
      if (this.frame === undefined) {
        const take = Math.min(4 - this.lengthFilled, view.length - pos)
        view.copy(this.lengthBytes, this.lengthFilled, pos, pos + take)
        this.lengthFilled += take
        pos += take
        if (this.lengthFilled < 4) return
        this.lengthFilled = 0
        this.frame = Buffer.allocUnsafe(this.lengthBytes.readUInt32BE(0) & 0xffffff)
        this.frameFilled = 0
      }
      const take = Math.min(this.frame.length - this.frameFilled, view.length - pos)
      view.copy(this.frame, this.frameFilled, pos, pos + take)
      if (this.sink !== undefined) this.sink.stats.copiedBytes += take
      this.frameFilled += take
      pos += take
      if (this.frameFilled === this.frame.length) {
        this.completeFrame()
        if (this.sink?.closed === true) return
      }
    }
  }
}

interface SocketOptions {
  host: string
  port: number
  connectTimeoutMs: number
  signal?: AbortSignal
}

/** Connects a socket whose reads go through `reader`; rejects with a RemoteError on a failure, a timeout or an abort. */
export function connectSocket(options: SocketOptions, reader: FrameReader): Promise<Socket> {
  const server = `${options.host}:${options.port}`
  return new Promise<Socket>((resolve, reject) => {
    const s = connect({
      host: options.host,
      port: options.port,
      onread: {
        buffer: () => reader.readTarget(),
        callback: (n: number, buf: Uint8Array) => {
          reader.onRead(n, buf)
          return true
        },
      },
    })
    const timer = setTimeout(() => {
      s.destroy()
      reject(connectionError('ETIMEDOUT', `SMB connection to ${server} timed out after ${options.connectTimeoutMs} ms`, server))
    }, options.connectTimeoutMs)
    const onAbort = () => {
      s.destroy()
      reject(new RemoteError('E_REMOTE', `SMB connection to ${server} aborted`, { cause: options.signal?.reason }))
    }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    s.once('connect', () => {
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      s.removeAllListeners('error')
      resolve(s)
    })
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      const code = e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET' ? 'ECONNRESET' : e.code === 'ETIMEDOUT' ? 'ETIMEDOUT' : 'E_REMOTE'
      reject(connectionError(code, `cannot connect to SMB server ${server}: ${e.message} (is smbd running and reachable on that port?)`, server, e))
    })
  })
}

/**
 * The fast path of a plain-HTTP disk export: a minimal HTTP/1.1 GET read straight off a `net` socket.
 *
 * Why by hand: node:http and undici cannot read a response body into caller-owned memory — every body
 * chunk goes through the HTTP parser and the stream machinery as a freshly allocated 64 KiB buffer,
 * which profiled at ≈1 CPU s/GiB for an export (curl: 0.3). Here the socket is opened with
 * `onread: { buffer, callback }`: the kernel copies the bytes into large slabs we own (4 MiB, handed out
 * as the unused tail of the current slab, so a read takes up to the whole socket buffer), and each read
 * is pushed downstream as a view of its slab — no copy, no per-read allocation, few large chunks. A
 * slab is never reused, so the views stay valid for as long as the consumer holds them.
 *
 * Chunk mode (`chunkBuffer`): the consumer says where the body goes — for each body offset it returns the
 * buffer to read into (a VHD block's own pooled buffer when a block starts there), the socket fills it
 * across as many reads as it takes, and it is pushed whole once full. So a parser that lays out its
 * chunk buffers on its blocks gets each block as one chunk, copied once, by the kernel.
 In this mode the slabs only take the response head (and the odd read the consumer has no buffer for), so
 * they are small (64 KiB): a 4 MiB slab would stay allocated for the whole export beside the block
 * buffers, 4 MiB per disk in flight (bench backup-rss).
 *
 * Scope (everything else goes back to node:http in export.ts): `http:` only, a response framed by
 * Content-Length or by the connection closing (what XAPI and the simulator send for export_raw_vdi).
 * A redirect or a chunked success is reported as `fallback` (the socket is closed and export.ts redoes
 * the request with node:http); an HTTP error is read (to the close: we send `Connection: close`,
 * chunked error bodies are decoded) and mapped like the node:http path does.
 *
 * The body stream keeps the node:http path's guarantees: backpressure (the socket stops reading while
 * the stream's buffer is full), a length check, a rate limit, an inactivity timeout, AbortSignal →
 * CancelledError, connection errors → transient XapiError.
 */
import { connect, type Socket } from 'node:net'
import { Readable } from 'node:stream'
import { CancelledError, TimeoutError, XapiError, errorCode } from '../common/errors.js'
import { ERROR_BODY_LIMIT, httpErrorFromBody } from './http.js'
import { HttpProtocolError, dechunk, isChunked, parseResponseHead, type ResponseHead } from './http-wire.js'

const SLAB_BYTES = 4 * 1024 * 1024
/** a new slab is started when the current one has less room than this for the next read */
const MIN_READ_BYTES = 256 * 1024
/** chunk mode: the slab for the head (and reads with no chunk buffer), and the least room a read gets in it */
const CHUNK_MODE_SLAB_BYTES = 64 * 1024
const CHUNK_MODE_MIN_READ_BYTES = 16 * 1024
const MAX_HEAD_BYTES = 64 * 1024

export function mapStreamError(error: unknown, what: string, received: number, signal: AbortSignal | undefined): Error {
  if (signal?.aborted === true) return new CancelledError(`${what} was cancelled after ${received} bytes`, { cause: signal.reason })
  if (error instanceof XapiError || error instanceof TimeoutError || error instanceof CancelledError) return error
  const code = errorCode(error)
  return new XapiError(`${what} was interrupted after ${received} bytes (${code ?? (error as Error).message}); the export is retried from the start`, {
    cause: error,
    fields: { networkCode: code ?? '', transient: true, bytesReceived: received },
  })
}

type SocketExportResult = { kind: 'ok'; stream: Readable; sizeBytes?: number } | { kind: 'fallback'; location?: string }

interface SocketExportOptions {
  what: string
  signal: AbortSignal | undefined
  timeoutMs: number
  maxRateBytesPerSecond: number | undefined
  /** chunk mode (see OpenVdiExportOptions.chunkBuffer): the buffer body bytes from `position` on are read into */
  chunkBuffer: ((position: number) => Buffer) | undefined
}

/**
 * Body of the export: views of the socket's slabs, pushed as they are read; or, in chunk mode, the
 * caller's buffers, each pushed whole once the socket filled it (or the body ended).
 */
class SocketExportStream extends Readable {
  /** body bytes pushed */
  private received = 0
  /** chunk mode: the buffer being filled and how many bytes it holds */
  private chunk: Buffer | undefined
  private chunkFill = 0
  /** chunk mode: the 1-byte buffer the socket's next read lands in while no chunk is taken (see readBuffer) */
  private landing: Buffer | undefined
  private inLanding = false
  private throttled = false
  private full = false
  private ended = false
  private timer: NodeJS.Timeout | undefined
  private readonly startMs = Date.now()
  private readonly onAbort = (): void => {
    this.destroy(mapStreamError(new Error('aborted'), this.what, this.received, this.signal))
  }

  constructor(
    private readonly socket: Socket,
    private readonly what: string,
    private readonly expectedBytes: number | undefined,
    private readonly rate: number | undefined,
    private readonly signal: AbortSignal | undefined,
    private readonly chunkBuffer: ((position: number) => Buffer) | undefined,
  ) {
    // large buffer: XAPI sends 2 MiB blocks, consumers parse per block; in chunk mode the consumer's
    // buffers are the read-ahead (the socket stops after each until the consumer asks for more)
    super({ highWaterMark: chunkBuffer === undefined ? 4 * 1024 * 1024 : 0 })
    signal?.addEventListener('abort', this.onAbort, { once: true })
  }

  /** a body read; returns false to stop reading the socket */
  onBytes(view: Buffer): boolean {
    if (this.destroyed) return false
    let chunk = view
    if (this.expectedBytes !== undefined && this.received + chunk.length >= this.expectedBytes) {
      chunk = chunk.subarray(0, this.expectedBytes - this.received)
      this.received += chunk.length
      if (chunk.length > 0) this.push(chunk)
      this.finish()
      return false
    }
    this.received += chunk.length
    // a consumer that paused the stream in its 'data' handler is full too, though a flowing push reports
    // room: the socket stops (its kernel buffer keeps receiving) instead of filling one more chunk
    if (chunk.length > 0 && (!this.push(chunk) || this.isPaused())) this.full = true
    if (this.rate !== undefined) {
      const aheadMs = (this.received / this.rate) * 1000 - (Date.now() - this.startMs)
      if (aheadMs > 1) {
        // a flag, not a deadline: timers may fire a little before Date.now() reaches a deadline
        this.throttled = true
        clearTimeout(this.timer)
        this.timer = setTimeout(() => {
          this.throttled = false
          this.maybeResume()
        }, aheadMs)
      }
    }
    return !this.full && !this.throttled
  }

  /** chunk mode: where the socket reads the next body bytes, else undefined (the socket's slab) */
  readBuffer(): Buffer | undefined {
    const allocate = this.chunkBuffer
    if (allocate === undefined || this.destroyed || this.ended) return undefined
    if (this.chunk === undefined) {
      if (this.full || this.throttled) {
        // Node asks for the next read's buffer as soon as a read is delivered, also when that read stopped
        // the socket: a chunk taken now (a pooled block buffer) would sit empty until the consumer asks for
        // more. The socket's first byte after it resumes lands here instead, and the chunk is taken then.
        this.landing ??= Buffer.allocUnsafeSlow(1)
        this.inLanding = true
        return this.landing
      }
      const chunk = allocate(this.received)
      if (chunk.length === 0) return undefined // nothing to read into: the slab takes the read
      this.chunk = chunk
      this.chunkFill = 0
    }
    return this.chunk.subarray(this.chunkFill)
  }

  /** chunk mode: `n` bytes were read into readBuffer(); returns false to stop reading the socket */
  onChunkBytes(n: number): boolean {
    if (this.inLanding) return this.onLandingByte(n)
    const chunk = this.chunk
    if (chunk === undefined || this.destroyed) return false
    this.chunkFill += n
    const complete = this.expectedBytes !== undefined && this.received + this.chunkFill >= this.expectedBytes
    if (this.chunkFill < chunk.length && !complete) return true
    this.chunk = undefined
    return this.onBytes(chunk.subarray(0, this.chunkFill))
  }

  /** chunk mode: the byte read into the landing buffer starts the next chunk, taken now */
  private onLandingByte(n: number): boolean {
    this.inLanding = false
    if (this.destroyed || n === 0) return !this.destroyed
    const chunk = this.chunkBuffer?.(this.received)
    if (chunk === undefined || chunk.length === 0) return this.onBytes(Buffer.from(this.landing!.subarray(0, n)))
    chunk[0] = this.landing![0]!
    this.chunk = chunk
    this.chunkFill = 0
    return this.onChunkBytes(n)
  }

  /** the socket ended (or the expected length was reached) */
  finish(): void {
    if (this.destroyed || this.ended) return
    const partial = this.chunk
    if (partial !== undefined) {
      // the socket ended inside a chunk: push what it holds (onBytes finishes itself when that completes
      // the expected length)
      this.chunk = undefined
      if (this.chunkFill > 0) this.onBytes(partial.subarray(0, this.chunkFill))
      if (this.destroyed || this.ended) return
    }
    this.ended = true
    if (this.expectedBytes !== undefined && this.received !== this.expectedBytes) {
      this.destroy(mapStreamError(Object.assign(new Error(`truncated: ${this.received} of ${this.expectedBytes} bytes`), { code: 'ECONNRESET' }), this.what, this.received, this.signal))
      return
    }
    this.signal?.removeEventListener('abort', this.onAbort)
    this.push(null)
    this.socket.destroy()
  }

  fail(error: unknown): void {
    this.destroy(mapStreamError(error, this.what, this.received, this.signal))
  }

  stalled(timeoutMs: number): void {
    this.destroy(new TimeoutError(`${this.what} stalled: no data for ${timeoutMs} ms after ${this.received} bytes`))
  }

  private maybeResume(): void {
    if (!this.full && !this.throttled && !this.destroyed && !this.socket.destroyed) this.socket.resume()
  }

  override _read(): void {
    this.full = false
    this.maybeResume()
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.timer)
    this.signal?.removeEventListener('abort', this.onAbort)
    this.socket.destroy()
    callback(error)
  }
}

/** an error response being read to the close */
interface ErrorBody {
  head: ResponseHead
  parts: Buffer[]
  length: number
}

/**
 * One request, from the connection to the response head: reads the socket into slabs (or the body's
 * chunks), parses the head, then either hands the socket to a SocketExportStream (a 2xx), reads an error
 * body to the close, or gives up for node:http (`fallback`). Settles `done` exactly once.
 */
class SocketExportRequest {
  private readonly socket: Socket
  /** slab size and least room per read: large slabs carry the body, small ones only the head (chunk mode) */
  private readonly slabBytes: number
  private readonly minReadBytes: number
  private slab: Buffer
  private slabPos = 0
  private headBytes: Buffer[] = []
  private headLength = 0
  private body: SocketExportStream | undefined
  private errorBody: ErrorBody | undefined
  /** the socket's next read goes into the body's chunk (chunk mode), not the slab */
  private intoChunk = false
  private settled = false
  private readonly onAbort = (): void => this.fail(new Error('aborted'))

  constructor(
    private readonly url: URL,
    private readonly o: SocketExportOptions,
    private readonly done: { resolve: (r: SocketExportResult) => void; reject: (e: unknown) => void },
  ) {
    this.slabBytes = o.chunkBuffer === undefined ? SLAB_BYTES : CHUNK_MODE_SLAB_BYTES
    this.minReadBytes = o.chunkBuffer === undefined ? MIN_READ_BYTES : CHUNK_MODE_MIN_READ_BYTES
    this.slab = Buffer.allocUnsafeSlow(this.slabBytes)
    this.socket = connect({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port === '' ? 80 : Number(url.port),
      onread: { buffer: () => this.readBuffer(), callback: (n, buf) => this.onRead(n, buf) },
    })
    this.socket.setNoDelay(true)
    this.socket.setTimeout(o.timeoutMs, () => {
      if (this.body !== undefined) this.body.stalled(o.timeoutMs)
      else this.fail(new TimeoutError(`XAPI did not answer within ${o.timeoutMs} ms`))
    })
    this.socket.on('error', (error) => {
      if (this.body !== undefined) this.body.fail(error)
      else this.fail(error)
    })
    this.socket.on('end', () => this.onClosed(true))
    this.socket.on('close', () => this.onClosed(false))
    o.signal?.addEventListener('abort', this.onAbort, { once: true })
  }

  /** Sends the GET (`Connection: close`: the response ends with the connection). */
  send(): void {
    const target = `${this.url.pathname}${this.url.search}`
    this.socket.write(`GET ${target} HTTP/1.1\r\nHost: ${this.url.host}\r\nAccept: application/octet-stream\r\nUser-Agent: backup-proxy\r\nConnection: close\r\n\r\n`)
  }

  private settle(fn: () => void): void {
    if (this.settled) return
    this.settled = true
    this.o.signal?.removeEventListener('abort', this.onAbort)
    fn()
  }

  private fail(error: unknown): void {
    this.socket.destroy()
    this.settle(() => this.done.reject(mapStreamError(error, this.o.what, 0, this.o.signal)))
  }

  /** the socket ended ('end') or closed: the body or the error body is complete, or the head never came */
  private onClosed(ended: boolean): void {
    if (this.body !== undefined) this.body.finish()
    else if (this.errorBody !== undefined) this.finishErrorBody(this.errorBody)
    else if (ended || !this.settled) this.fail(Object.assign(new Error('connection closed before the response head'), { code: 'ECONNRESET' }))
  }

  private finishErrorBody(errorBody: ErrorBody): void {
    let raw: Buffer = Buffer.concat(errorBody.parts)
    if (isChunked(errorBody.head.headers.get('transfer-encoding'))) raw = dechunk(raw)
    const error = httpErrorFromBody(errorBody.head.status, raw.subarray(0, ERROR_BODY_LIMIT).toString('utf8'), this.o.what)
    this.settle(() => this.done.reject(error))
  }

  /** where the socket reads next: the body's chunk (chunk mode), else the rest of the slab (a new one when little is left) */
  private readBuffer(): Uint8Array {
    const chunk = this.body?.readBuffer()
    this.intoChunk = chunk !== undefined
    if (chunk !== undefined) return chunk
    if (this.slabBytes - this.slabPos < this.minReadBytes) {
      this.slab = Buffer.allocUnsafeSlow(this.slabBytes)
      this.slabPos = 0
    }
    return this.slab.subarray(this.slabPos)
  }

  /** `n` bytes were read into readBuffer(); returns false to stop reading the socket */
  private onRead(n: number, buf: Uint8Array): boolean {
    if (this.intoChunk && this.body !== undefined) return this.body.onChunkBytes(n)
    const view = Buffer.from(buf.buffer, buf.byteOffset, n)
    this.slabPos += n
    if (this.body !== undefined) return this.body.onBytes(view)
    const errorBody = this.errorBody
    if (errorBody !== undefined) {
      if (errorBody.length < ERROR_BODY_LIMIT) {
        errorBody.parts.push(Buffer.from(view))
        errorBody.length += n
      }
      return true
    }
    return this.onHeadBytes(view)
  }

  /** bytes of the response head (and maybe the start of the body) */
  private onHeadBytes(view: Buffer): boolean {
    this.headBytes.push(view)
    this.headLength += view.length
    const all = this.headBytes.length === 1 ? view : Buffer.concat(this.headBytes)
    const end = all.indexOf('\r\n\r\n')
    if (end < 0) {
      if (this.headLength > MAX_HEAD_BYTES) this.fail(new HttpProtocolError('HTTP response head too large'))
      else this.headBytes = [Buffer.from(all)]
      return true
    }
    this.headBytes = []
    let head: ResponseHead
    try {
      head = parseResponseHead(all.toString('latin1', 0, end))
    } catch (error) {
      this.fail(error)
      return false
    }
    return this.onHead(head, all.subarray(end + 4))
  }

  /** the head is in: a redirect or a chunked success fall back, an error is read to the close, a success becomes the body stream */
  private onHead(head: ResponseHead, rest: Buffer): boolean {
    const { status, headers } = head
    if (status >= 300 && status < 400 && headers.has('location')) {
      this.socket.destroy()
      this.settle(() => this.done.resolve({ kind: 'fallback', location: headers.get('location') ?? '' }))
      return false
    }
    if (status < 200 || status >= 300) {
      this.errorBody = { head, parts: [Buffer.from(rest)], length: rest.length }
      return true
    }
    if (headers.has('transfer-encoding')) {
      this.socket.destroy()
      this.settle(() => this.done.resolve({ kind: 'fallback' }))
      return false
    }
    const length = headers.get('content-length')
    const sizeBytes = length === undefined ? undefined : Number(length)
    const known = sizeBytes !== undefined && Number.isSafeInteger(sizeBytes) && sizeBytes >= 0 ? sizeBytes : undefined
    const stream = new SocketExportStream(this.socket, this.o.what, known, this.o.maxRateBytesPerSecond, this.o.signal, this.o.chunkBuffer)
    this.body = stream
    this.settle(() => this.done.resolve(known === undefined ? { kind: 'ok', stream } : { kind: 'ok', stream, sizeBytes: known }))
    return stream.onBytes(rest)
  }
}

/**
 * GETs `url` (http:) and resolves once the response head is in: with the body stream on a 2xx framed by
 * Content-Length or close, `fallback` for a redirect or a chunked body; rejects with the mapped error
 * on an HTTP error, a connection failure, a timeout or an abort.
 */
export function openSocketExport(url: URL, o: SocketExportOptions): Promise<SocketExportResult> {
  return new Promise((resolve, reject) => new SocketExportRequest(url, o, { resolve, reject }).send())
}

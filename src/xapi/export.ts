/**
 * Disk export from plain, serializable data, so it can run inside a worker thread where no `xen-api`
 * client exists: the main thread builds a `VdiExportDescriptor` (URL, session id, refs, task ref) with
 * `XapiClient.exportDescriptor()`, posts it to the thread, and the thread calls `openVdiExport()`.
 *
 * Over http:, the GET is made by socket-export.ts (a minimal HTTP/1.1 reader that hands the body out as
 * views of large socket-read slabs: half the CPU of node:http); https:, a redirect or a chunked body
 * use node:http as below. `BACKUP_PROXY_EXPORT_NODE_HTTP=1` forces node:http (for benchmarks and as an
 * escape hatch should a XAPI answer something the fast path misreads).
 *
 * It is a plain HTTP(S) GET of `/export_raw_vdi/?session_id&vdi&format[&base][&task_id]` with node:http
 * (no extra dependency, and the response is a Readable without web-stream overhead). Redirects to
 * another host of the pool (302) are followed. The body is wrapped in an `ExportStream` that maps
 * errors (HTTP status → XapiError with the XAPI code, reset → transient XapiError, inactivity →
 * TimeoutError, abort → CancelledError), checks the length, and throttles to `maxRateBytesPerSecond`.
 */
import type { ClientRequest, IncomingMessage } from 'node:http'
import { Readable } from 'node:stream'
import { CancelledError, TimeoutError, XapiError } from '../common/errors.js'
import { tlsFailure } from './errors.js'
import { httpError, xapiHandlerUrl, xapiRequest } from './http.js'
import { mapStreamError, openSocketExport } from './socket-export.js'

export interface VdiExportDescriptor {
  /** XAPI base URL, without credentials (`https://host[:port]`) */
  url: string
  sessionId: string
  vdiRef: string
  /** for a differencing VHD against this VDI */
  baseRef?: string
  format: 'vhd' | 'raw'
  /** XAPI task the export runs under (progress, cancel) */
  taskRef?: string
  allowUnauthorized?: boolean
  /** throttle, bytes per second */
  maxRateBytesPerSecond?: number
}

interface OpenVdiExportOptions extends VdiExportDescriptor {
  signal?: AbortSignal
  /** no byte for this long fails the export; default 5 minutes like xen-api */
  inactivityTimeoutMs?: number
  /**
   * Where the body goes (plain-http fast path only; ignored by node:http): called with a body offset,
   * returns the buffer the bytes from there are read into; the stream then yields that buffer whole
   * once filled (shorter only at the end of the body). The caller owns it and must not hand the same
   * memory out again before the stream's consumer is done with it.
   */
  chunkBuffer?: (position: number) => Buffer
}

export interface VdiExport {
  stream: Readable
  /** Content-Length when XAPI sent one */
  sizeBytes?: number
}

const MAX_REDIRECTS = 3

function validate(o: OpenVdiExportOptions): URL {
  if (typeof o.sessionId !== 'string' || o.sessionId === '') throw new XapiError('openVdiExport: sessionId is required')
  if (typeof o.vdiRef !== 'string' || o.vdiRef === '') throw new XapiError('openVdiExport: vdiRef is required')
  if (o.format !== 'vhd' && o.format !== 'raw') throw new XapiError(`openVdiExport: format must be "vhd" or "raw", got ${String(o.format)}`)
  if (o.baseRef !== undefined && o.format !== 'vhd') throw new XapiError('openVdiExport: baseRef needs format "vhd"')
  if (o.maxRateBytesPerSecond !== undefined && !(o.maxRateBytesPerSecond > 0)) {
    throw new XapiError(`openVdiExport: maxRateBytesPerSecond must be positive, got ${o.maxRateBytesPerSecond}`)
  }
  return xapiHandlerUrl(o.url, '/export_raw_vdi/', { session_id: o.sessionId, vdi: o.vdiRef, format: o.format, base: o.baseRef, task_id: o.taskRef })
}

function describe(o: OpenVdiExportOptions): string {
  return `export of VDI ${o.vdiRef}${o.baseRef === undefined ? '' : ` (delta against ${o.baseRef})`}`
}

function get(url: URL, allowUnauthorized: boolean, signal: AbortSignal | undefined, timeoutMs: number): Promise<{ req: ClientRequest; res: IncomingMessage }> {
  return new Promise((resolve, reject) => {
    const req = xapiRequest(url, { method: 'GET', headers: { Accept: 'application/octet-stream' }, allowUnauthorized, signal })
    req.setTimeout(timeoutMs, () => req.destroy(new TimeoutError(`XAPI did not answer within ${timeoutMs} ms`)))
    req.once('response', (res) => resolve({ req, res }))
    req.once('error', reject)
    req.end()
  })
}

/**
 * The export body: forwards the HTTP response with backpressure, maps its errors, checks its length and
 * paces it to a maximum rate. Destroying it aborts the HTTP request.
 */
class ExportStream extends Readable {
  private received = 0
  private wantMore = false
  /** paused by the rate limit until its timer fires */
  private throttled = false
  private timer: NodeJS.Timeout | undefined
  private readonly startMs = Date.now()

  constructor(
    private readonly req: ClientRequest,
    private readonly res: IncomingMessage,
    private readonly what: string,
    private readonly expectedBytes: number | undefined,
    private readonly rate: number | undefined,
    private readonly signal: AbortSignal | undefined,
    timeoutMs: number,
  ) {
    // large buffer: XAPI sends 2 MiB blocks, consumers parse per block
    super({ highWaterMark: 4 * 1024 * 1024 })
    res.on('data', (chunk: Buffer) => this.onData(chunk))
    res.on('end', () => this.onEnd())
    res.on('error', (e) => this.destroy(mapStreamError(e, what, this.received, signal)))
    res.on('aborted', () => this.destroy(mapStreamError(Object.assign(new Error('connection aborted'), { code: 'ECONNRESET' }), what, this.received, signal)))
    req.on('error', (e) => this.destroy(mapStreamError(e, what, this.received, signal)))
    req.setTimeout(timeoutMs, () => this.destroy(new TimeoutError(`${what} stalled: no data for ${timeoutMs} ms after ${this.received} bytes`)))
    res.pause()
  }

  private onData(chunk: Buffer): void {
    this.received += chunk.length
    if (!this.push(chunk)) {
      this.wantMore = false
      this.res.pause()
    }
    if (this.rate !== undefined) {
      const aheadMs = (this.received / this.rate) * 1000 - (Date.now() - this.startMs)
      if (aheadMs > 1) {
        // a flag, not a deadline: timers may fire a little before Date.now() reaches a deadline
        this.throttled = true
        this.res.pause()
        clearTimeout(this.timer)
        this.timer = setTimeout(() => {
          this.throttled = false
          this.maybeResume()
        }, aheadMs)
      }
    }
  }

  private onEnd(): void {
    if (this.expectedBytes !== undefined && this.received !== this.expectedBytes) {
      this.destroy(mapStreamError(Object.assign(new Error(`truncated: ${this.received} of ${this.expectedBytes} bytes`), { code: 'ECONNRESET' }), this.what, this.received, this.signal))
      return
    }
    this.push(null)
  }

  private maybeResume(): void {
    if (this.wantMore && !this.throttled && !this.destroyed) this.res.resume()
  }

  override _read(): void {
    this.wantMore = true
    this.maybeResume()
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.timer)
    if (!this.res.complete || !this.req.destroyed) this.req.destroy()
    callback(error)
  }
}

function redirected(url: URL, location: string): URL {
  const next = new URL(location, url)
  // keep our query (the redirect may drop task_id)
  for (const [k, v] of url.searchParams) if (!next.searchParams.has(k)) next.searchParams.set(k, v)
  return next
}

/** Opens an export; resolves once XAPI answered 200, with the body stream and its length. */
export async function openVdiExport(options: OpenVdiExportOptions): Promise<VdiExport> {
  let url = validate(options)
  const what = describe(options)
  const signal = options.signal
  const timeoutMs = options.inactivityTimeoutMs ?? 5 * 60_000
  if (signal?.aborted === true) throw new CancelledError(`${what} was cancelled before it started`, { cause: signal.reason })
  if (url.protocol === 'http:' && process.env.BACKUP_PROXY_EXPORT_NODE_HTTP !== '1') {
    // fast path (see socket-export.ts); a redirect or a chunked body is redone below with node:http
    const fast = await openSocketExport(url, { what, signal, timeoutMs, maxRateBytesPerSecond: options.maxRateBytesPerSecond, chunkBuffer: options.chunkBuffer })
    if (fast.kind === 'ok') return fast.sizeBytes === undefined ? { stream: fast.stream } : { stream: fast.stream, sizeBytes: fast.sizeBytes }
    if (fast.location !== undefined) url = redirected(url, fast.location)
  }
  for (let redirects = 0; ; redirects++) {
    let req: ClientRequest
    let res: IncomingMessage
    try {
      ;({ req, res } = await get(url, options.allowUnauthorized === true, signal, timeoutMs))
    } catch (error) {
      throw tlsFailure(error, `opening the ${what}`) ?? mapStreamError(error, what, 0, signal)
    }
    const status = res.statusCode ?? 0
    const location = res.headers.location
    if ((status === 302 || status === 301 || status === 307) && location !== undefined && redirects < MAX_REDIRECTS) {
      res.resume()
      url = redirected(url, location)
      continue
    }
    if (status < 200 || status >= 300) throw await httpError(res, what)
    const length = res.headers['content-length']
    const sizeBytes = length === undefined ? undefined : Number(length)
    const stream = new ExportStream(req, res, what, sizeBytes, options.maxRateBytesPerSecond, signal, timeoutMs)
    return sizeBytes === undefined || !Number.isSafeInteger(sizeBytes) ? { stream } : { stream, sizeBytes }
  }
}

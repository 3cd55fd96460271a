/**
 * A bare HTTP/1.1 GET whose response body is handed out as slices of the socket's own reads, for the
 * XVA export (src/xva/http.ts), the one transfer whose every byte goes through the proxy's main CPU
 * budget. Written by hand because node:http's parser copies every body byte into a new Buffer
 * (`Buffer::Copy` in its `on_body`) and undici's copies the socket's reads into its WebAssembly
 * memory: on a 1 GiB chunked body received from a local server node:http's client took 0.78–0.81 CPU
 * s against 0.32–0.59 for the socket alone, and the copy was ~20 % of a full backup's main thread
 * (perf). Only what XAPI's handlers answer is understood: a status line, headers, then a body with
 * `Transfer-Encoding: chunked` (the simulator, node:http), a Content-Length, or up to the connection's
 * close (XAPI, `Connection: close`); no redirects, no keep-alive (as the node:http request before it).
 * The socket reads into reused slabs (slab-pool.ts): a consumer that hands each body chunk back with
 * `release` once done with it lets the next reads reuse its memory.
 */
import { connect as netConnect, isIP, type OnReadOpts, type Socket } from 'node:net'
import { Readable } from 'node:stream'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import { ChunkedBody, HttpProtocolError, isChunked, parseResponseHead } from './http-wire.js'
import { SlabPool } from './slab-pool.js'

/** Longest status line + headers accepted. */
const HEAD_LIMIT = 64 * 1024

/** The response: its status, lowercased headers, and its body as a Readable (`complete` once all of it arrived). */
export class RawResponse extends Readable {
  statusCode = 0
  headers: Record<string, string> = {}
  /** the whole body arrived (its last chunk, its length, or the close of a body without length) */
  complete = false
  #socket: Socket | undefined
  readonly #slabs: SlabPool

  constructor(slabs: SlabPool) {
    super({ highWaterMark: 4 * 1024 * 1024 })
    this.#slabs = slabs
  }

  attach(socket: Socket): void {
    this.#socket = socket
  }

  override _read(): void {
    this.#socket?.resume()
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#socket?.destroy()
    callback(error)
  }

  /** Hands a body slice on; pauses the socket while the consumer is behind. */
  deliver(chunk: Buffer): void {
    this.#slabs.retain(chunk)
    if (!this.push(chunk)) this.#socket?.pause()
  }

  /**
   * The consumer is done with a body chunk this response gave it (nothing reads it again): its memory
   * may take the socket's next reads. Optional; call it at most once per chunk.
   */
  release(chunk: Buffer): void {
    this.#slabs.release(chunk)
  }
}

/** How the body after the head is read: returns the function fed each socket read. */
function bodyReader(res: RawResponse, finish: () => void): (buf: Buffer) => void {
  if (isChunked(res.headers['transfer-encoding'])) {
    const chunked = new ChunkedBody()
    const out = (b: Buffer): void => res.deliver(b)
    return (buf) => {
      chunked.feed(buf, out)
      if (chunked.done) finish()
    }
  }
  const length = res.headers['content-length']
  if (length === undefined) return (buf) => res.deliver(buf)
  let left = Number(length)
  if (!Number.isSafeInteger(left) || left < 0) throw new HttpProtocolError(`bad Content-Length ${JSON.stringify(length)}`)
  if (left === 0) finish()
  return (buf) => {
    if (left === 0) return
    const b = buf.length > left ? buf.subarray(0, left) : buf
    left -= b.length
    if (b.length > 0) res.deliver(b)
    if (left === 0) finish()
  }
}

function openSocket(url: URL, allowUnauthorized: boolean, onread: OnReadOpts): Socket {
  const host = url.hostname.replace(/^\[|\]$/g, '')
  const https = url.protocol === 'https:'
  const port = url.port === '' ? (https ? 443 : 80) : Number(url.port)
  if (!https) return netConnect({ host, port, noDelay: true, onread })
  // tls.connect takes net's `onread` too (documented with tls.connect; @types/node lacks it)
  const options: ConnectionOptions & { onread: OnReadOpts } = { host, port, ...(isIP(host) === 0 ? { servername: host } : {}), rejectUnauthorized: !allowUnauthorized, minVersion: 'TLSv1', onread }
  return tlsConnect(options)
}

/**
 * GET `url`; resolves with the response once its head arrived (any status: the caller decides). The
 * body ends without `complete` when the connection closes early. Aborting `signal` or destroying the
 * response closes the connection.
 */
export function rawGet(url: URL, o: { headers: Record<string, string>; allowUnauthorized: boolean; signal?: AbortSignal }): Promise<RawResponse> {
  const slabs = new SlabPool()
  const res = new RawResponse(slabs)
  let onData: (buf: Buffer) => void = () => undefined
  const socket = openSocket(url, o.allowUnauthorized, {
    buffer: () => slabs.next(),
    callback: (n, buf) => {
      onData(slabs.take(n, buf))
      return true
    },
  })
  res.attach(socket)
  const head = Object.entries({ Host: url.host, ...o.headers, Connection: 'close' }).map(([k, v]) => `${k}: ${v}\r\n`).join('')
  socket.write(`GET ${url.pathname}${url.search} HTTP/1.1\r\n${head}\r\n`)
  return new Promise<RawResponse>((resolve, reject) => {
    let pending: Buffer[] = []
    let ended = false
    const end = (): void => {
      if (ended) return
      ended = true
      res.push(null)
    }
    let feed: ((buf: Buffer) => void) | undefined
    const finish = (): void => {
      if (res.complete) return
      res.complete = true
      end()
      socket.end()
    }
    const fail = (error: Error): void => {
      socket.destroy()
      if (feed === undefined) reject(error)
      else res.destroy(error)
    }
    const onAbort = (): void => fail(o.signal?.reason instanceof Error ? o.signal.reason : new Error('aborted'))
    o.signal?.addEventListener('abort', onAbort, { once: true })
    onData = (buf: Buffer): void => {
      try {
        if (feed !== undefined) return feed(buf)
        pending.push(buf)
        const all = pending.length === 1 ? buf : Buffer.concat(pending)
        const headEnd = all.indexOf('\r\n\r\n')
        if (headEnd === -1) {
          if (all.length > HEAD_LIMIT) throw new HttpProtocolError('HTTP response head too long')
          // a copy: the read's slab is not held by anyone, the socket's next reads may land in it
          pending = [Buffer.from(all)]
          return
        }
        pending = []
        const parsed = parseResponseHead(all.toString('latin1', 0, headEnd))
        res.statusCode = parsed.status
        res.headers = Object.fromEntries(parsed.headers)
        feed = bodyReader(res, finish)
        resolve(res)
        if (all.length > headEnd + 4) feed(all.subarray(headEnd + 4))
      } catch (error) {
        fail(error as Error)
      }
    }
    socket.once('error', fail)
    socket.once('close', () => {
      o.signal?.removeEventListener('abort', onAbort)
      if (feed === undefined) return reject(new Error('the connection closed before the HTTP response'))
      // a body without length ends with the connection: whole unless the socket failed
      if (!res.complete && res.headers['content-length'] === undefined && res.headers['transfer-encoding'] === undefined && !socket.errored) res.complete = true
      if (!res.destroyed) end()
    })
  })
}

/**
 * The few pieces of HTTP/1.1's wire format that the proxy's two hand-written GET readers share: the
 * XVA export's bare GET (raw-get.ts) and the plain-HTTP disk export (socket-export.ts). Both exist
 * because node:http's parser copies every body byte (see their headers); what they parse is only a
 * status line with headers and, for chunked bodies, the chunk framing.
 */

/** A response that is not HTTP/1.x as we understand it (status line, head size, chunk framing). */
export class HttpProtocolError extends Error {
  override readonly name = 'HttpProtocolError'
  readonly code = 'E_HTTP_PROTOCOL'
}

export interface ResponseHead {
  status: number
  /** lower-cased names; a repeated header keeps its last value */
  headers: Map<string, string>
}

/** Parses a response head (status line and headers, without the blank line that ends it). */
export function parseResponseHead(text: string): ResponseHead {
  const [statusLine, ...lines] = text.split('\r\n')
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '')
  if (m === null) throw new HttpProtocolError(`not an HTTP response: malformed status line ${JSON.stringify((statusLine ?? '').slice(0, 80))}`)
  const headers = new Map<string, string>()
  for (const line of lines) {
    const colon = line.indexOf(':')
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim())
  }
  return { status: Number(m[1]), headers }
}

/** True when a `Transfer-Encoding` value ends with `chunked` (the body is chunk-framed). */
export function isChunked(transferEncoding: string | undefined): boolean {
  return /(^|,)\s*chunked\s*$/i.test(transferEncoding ?? '')
}

/**
 * Decoder of a chunked body: `<hex size>[;ext]\r\n<data>\r\n` … `0\r\n[trailers]\r\n`. Data are
 * handed out as subarrays of the input; only the short size and trailer lines are gathered across reads.
 */
export class ChunkedBody {
  #state: 'size' | 'data' | 'crlf' | 'trailer' | 'done' = 'size'
  #line = ''
  #left = 0

  get done(): boolean {
    return this.#state === 'done'
  }

  /** Feeds one socket read; calls `out` with each data slice. Throws on malformed framing. */
  feed(buf: Buffer, out: (b: Buffer) => void): void {
    let i = 0
    while (i < buf.length && this.#state !== 'done') {
      if (this.#state === 'data') {
        const n = Math.min(this.#left, buf.length - i)
        out(buf.subarray(i, i + n))
        i += n
        this.#left -= n
        if (this.#left === 0) this.#state = 'crlf'
        continue
      }
      const nl = buf.indexOf(10, i)
      const end = nl === -1 ? buf.length : nl + 1
      this.#line += buf.toString('latin1', i, end)
      i = end
      if (this.#line.length > 4096) throw new HttpProtocolError('HTTP chunk header too long')
      if (nl === -1) continue
      const line = this.#line.replace(/\r?\n$/, '')
      this.#line = ''
      this.#onLine(line)
    }
  }

  #onLine(line: string): void {
    if (this.#state === 'crlf') {
      if (line !== '') throw new HttpProtocolError('HTTP chunk not followed by CRLF')
      this.#state = 'size'
    } else if (this.#state === 'size') {
      const size = /^([0-9a-fA-F]+)[ \t]*(;.*)?$/.exec(line)
      if (size === null) throw new HttpProtocolError(`bad HTTP chunk size line: ${JSON.stringify(line.slice(0, 40))}`)
      this.#left = Number.parseInt(size[1]!, 16)
      this.#state = this.#left === 0 ? 'trailer' : 'data'
    } else if (line === '') {
      this.#state = 'done'
    }
  }
}

/** Decodes a whole chunked body held in memory (an error body: small; a cut one gives what arrived). */
export function dechunk(raw: Buffer): Buffer {
  const parts: Buffer[] = []
  new ChunkedBody().feed(raw, (b) => parts.push(b))
  return Buffer.concat(parts)
}

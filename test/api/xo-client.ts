/**
 * A client that calls the API exactly as xo-server's `callProxyMethod` does (packages/xo-server
 * proxies.mjs): HTTPS without certificate check, `POST /api/v1` with the JSON-RPC request of
 * json-rpc-peer's `format.request(0, method, params)`, the token in the `authenticationToken` cookie
 * (cookie.serialize encoding), a non-2xx status → `Error("<status> <statusText>")`, and the answer read
 * like split2(JSON.parse): the first line is the JSON-RPC response (an error → thrown with its code and
 * data), `{"$responseType":"ndjson"}` → the following lines, each JSON.parse'd (a blank or whitespace-only
 * line throws there, as split2 would). `assertType` as XO's: 'scalar' | 'iterator' | 'stream'.
 */
import { request, Agent } from 'node:https'
import type { IncomingMessage } from 'node:http'

export class XoJsonRpcError extends Error {
  constructor(
    message: string,
    readonly code: number,
    readonly data: unknown,
  ) {
    super(message)
  }
}

interface RawResponse {
  status: number
  statusText: string
  headers: IncomingMessage['headers']
  body: string
}

const agent = new Agent({ rejectUnauthorized: false, keepAlive: false })

/** One raw HTTP call (for malformed-request tests). */
export function rawCall(url: string, body: string | Buffer, headers: Record<string, string> = {}, method = 'POST'): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent, headers: { 'Content-Type': 'application/json', ...headers } }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? '', headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** Lines of a response as split2(JSON.parse) yields them. */
async function* jsonLines(res: IncomingMessage): AsyncGenerator<unknown> {
  let last = ''
  for await (const chunk of res) {
    last += (chunk as Buffer).toString('utf8')
    const list = last.split(/\r?\n/)
    last = list.pop()!
    for (const piece of list) yield JSON.parse(piece) as unknown
  }
  if (last) yield JSON.parse(last) as unknown
}

export class XoProxyClient {
  constructor(
    readonly url: string,
    public token: string,
  ) {}

  async call(method: string, params?: Record<string, unknown>, { assertType = 'scalar' } = {}): Promise<unknown> {
    const body = JSON.stringify({ id: 0, jsonrpc: '2.0', method, params })
    const cookie = `authenticationToken=${encodeURIComponent(this.token)}`
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request(this.url, { method: 'POST', agent, headers: { 'Content-Type': 'application/json', Cookie: cookie } }, resolve)
      req.on('error', reject)
      req.end(body)
    })
    const status = res.statusCode ?? 0
    if (status < 200 || status > 299) {
      res.resume()
      throw new Error(`${status} ${res.statusMessage ?? ''}`)
    }
    const type = (res.headers['content-type'] ?? '').split(';')[0]!.trim()
    if (type === 'application/octet-stream') {
      if (assertType !== 'stream') throw new Error(`expect the result to be ${assertType}`)
      return res
    }
    if (type !== 'application/json') throw new Error(`unexpected content type ${type}`)
    const lines = jsonLines(res)
    const first = await lines.next()
    if (first.done === true) throw new Error('empty response')
    const message = first.value as { result?: unknown; error?: { message: string; code: number; data?: unknown } }
    if (message.error !== undefined) {
      await lines.return(undefined)
      throw new XoJsonRpcError(message.error.message, message.error.code, message.error.data)
    }
    const result = message.result as { $responseType?: unknown } | null
    const isIterator = result !== null && typeof result === 'object' && result.$responseType === 'ndjson'
    if (assertType !== (isIterator ? 'iterator' : 'scalar')) {
      await lines.return(undefined)
      throw new Error(`expect the result to be ${assertType}`)
    }
    if (isIterator) return lines
    await lines.return(undefined)
    return result
  }

  /** An iterator method's values, collected. */
  async collect(method: string, params?: Record<string, unknown>): Promise<unknown[]> {
    const out: unknown[] = []
    for await (const v of (await this.call(method, params, { assertType: 'iterator' })) as AsyncIterable<unknown>) out.push(v)
    return out
  }
}

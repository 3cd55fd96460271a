/**
 * The API's HTTPS transport (XO's `POST /api/v1`): authentication first (401 without the right cookie),
 * then the body (at most `maxBodyBytes`; larger → 413 with a JSON-RPC error), one JSON-RPC request,
 * one answer:
 *   - a plain result or an error: `application/json`, one JSON-RPC response line;
 *   - an iterable result: `application/json`, NDJSON — the response line `{"$responseType":"ndjson"}`,
 *     then one JSON value per line while the iterator yields. The first value is awaited before anything
 *     is written, so an early failure is still a JSON-RPC error (as XO's proxy does). While idle, a space
 *     is written every `keepAliveMs` (XO's keep-alive; JSON.parse of the next line ignores it);
 *   - a BinaryResult: `application/octet-stream`.
 * Other paths answer 404, other methods 405. A client that goes away aborts its call's signal (a
 * followed backup stops being followed; the backup itself runs on). No request can crash the process:
 * every failure ends as an HTTP answer and a log line.
 */
import { createServer, type Server } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ConfigInvalidError } from '../common/errors.js'
import type { Logger } from '../common/log.js'
import type { Authenticator } from './auth.js'
import type { TlsMaterial } from './cert.js'
import { BinaryResult, RPC_CODES, RpcError, errorLine, parseRequest, responseLine, type MethodRegistry, type RpcRequest } from './rpc.js'

const API_PATH = '/api/v1'

interface ApiServerOptions {
  listen: string
  tls: TlsMaterial
  auth: Authenticator
  methods: MethodRegistry
  logger: Logger
  maxBodyBytes: number
  keepAliveMs: number
}

export interface ApiServer {
  url: string
  port: number
  close(): Promise<void>
}

class BodyTooLarge extends Error {}

function readBody(req: IncomingMessage, maxBytes: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'])
    if (Number.isFinite(declared) && declared > maxBytes) return reject(new BodyTooLarge())
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > maxBytes) {
        req.removeAllListeners('data')
        req.pause()
        reject(new BodyTooLarge())
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

function isIterable(v: unknown): v is Iterable<unknown> | AsyncIterable<unknown> {
  return typeof v === 'object' && v !== null && (Symbol.iterator in v || Symbol.asyncIterator in v)
}

function iteratorOf(v: Iterable<unknown> | AsyncIterable<unknown>): AsyncIterator<unknown> | Iterator<unknown> {
  return Symbol.asyncIterator in v ? v[Symbol.asyncIterator]() : v[Symbol.iterator]()
}

function sendJson(res: ServerResponse, status: number, text: string, close = false): void {
  if (res.headersSent) return void res.end()
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...(close ? { Connection: 'close' } : {}) })
  res.end(text)
}

/** Writes an iterable result as NDJSON (see the header). */
async function streamNdjson(res: ServerResponse, id: RpcRequest['id'], iterable: Iterable<unknown> | AsyncIterable<unknown>, keepAliveMs: number, logger: Logger): Promise<void> {
  const iterator = iteratorOf(iterable)
  let cursor: IteratorResult<unknown>
  try {
    cursor = await iterator.next()
  } catch (error) {
    sendJson(res, 200, errorLine(id, error))
    return
  }
  res.writeHead(200, { 'Content-Type': 'application/json' })
  res.write(responseLine(id, { $responseType: 'ndjson' }))
  const timer = keepAliveMs > 0 ? setInterval(() => res.write(' '), keepAliveMs) : undefined
  timer?.unref()
  try {
    while (cursor.done !== true && !res.destroyed) {
      let line: string | undefined
      try {
        line = JSON.stringify(cursor.value)
      } catch (error) {
        logger.warn({ err: error }, 'API: an item of a streamed answer is not JSON; skipped')
      }
      if (line !== undefined) res.write(`${line}\n`)
      cursor = await iterator.next()
    }
  } catch (error) {
    // XO's proxy ends the stream on a failure after the first line; the client sees the stream stop
    logger.warn({ err: error }, 'API: a streamed answer failed midway; ending it')
  } finally {
    clearInterval(timer)
    if (res.destroyed) await Promise.resolve(iterator.return?.()).catch(() => undefined)
    res.end()
  }
}

async function answer(res: ServerResponse, req: RpcRequest, result: unknown, options: ApiServerOptions): Promise<void> {
  if (result instanceof BinaryResult) {
    res.writeHead(200, { 'Content-Type': 'application/octet-stream' })
    result.stream.on('error', (error) => {
      options.logger.warn({ err: error, method: req.method }, 'API: binary answer failed midway')
      res.destroy()
    })
    result.stream.pipe(res)
    return
  }
  if (isIterable(result) && typeof result !== 'string') return streamNdjson(res, req.id, result, options.keepAliveMs, options.logger)
  sendJson(res, 200, responseLine(req.id, result))
}

async function handle(req: IncomingMessage, res: ServerResponse, options: ApiServerOptions): Promise<void> {
  const path = (req.url ?? '').split('?')[0]
  if (path !== API_PATH && path !== `${API_PATH}/`) return sendJson(res, 404, '')
  if (req.method !== 'POST') {
    res.setHeader('Allow', 'POST')
    return sendJson(res, 405, '')
  }
  const controller = new AbortController()
  res.on('close', () => controller.abort())
  if (!(await options.auth.check(req, controller.signal))) {
    res.writeHead(401, { Connection: 'close', 'Content-Length': 0 })
    res.end()
    return
  }
  let body: string
  try {
    body = await readBody(req, options.maxBodyBytes)
  } catch (error) {
    if (!(error instanceof BodyTooLarge)) throw error
    const e = new RpcError(RPC_CODES.INVALID_REQUEST, `the request body is larger than ${options.maxBodyBytes} bytes (api.maxBodyBytes)`, { code: 'E_API_REQUEST' })
    return sendJson(res, 413, errorLine(null, e), true)
  }
  let request: RpcRequest
  try {
    request = parseRequest(body)
  } catch (error) {
    return sendJson(res, 200, errorLine(null, error))
  }
  const logger = options.logger
  if (logger.isLevelEnabled('debug')) logger.debug({ method: request.method }, 'API call')
  let result: unknown
  try {
    result = await options.methods.call(request.method, request.params, { logger, signal: controller.signal })
  } catch (error) {
    if (!(error instanceof RpcError)) logger.warn({ err: error, method: request.method }, 'API call failed')
    return sendJson(res, 200, errorLine(request.id, error))
  }
  await answer(res, request, result, options)
}

function parseListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':')
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) }
}

export async function startApiServer(options: ApiServerOptions): Promise<ApiServer> {
  const server: Server = createServer({ cert: options.tls.cert, key: options.tls.key }, (req, res) => {
    handle(req, res, options).catch((error: unknown) => {
      options.logger.error({ err: error }, 'API: request handling failed')
      if (!res.headersSent) sendJson(res, 500, errorLine(null, error), true)
      else res.destroy()
    })
  })
  // a TLS handshake or socket error of one client is that client's problem, never the process's
  server.on('tlsClientError', (error) => options.logger.debug({ err: error }, 'API: TLS handshake failed'))
  server.on('clientError', (error, socket) => {
    options.logger.debug({ err: error }, 'API: bad HTTP request')
    socket.destroy()
  })
  // XO's backup.run answers stream for hours: no inactivity timeout on requests
  server.requestTimeout = 0
  server.headersTimeout = 60_000
  const { host, port } = parseListen(options.listen)
  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error) => {
      const hint = (error as NodeJS.ErrnoException).code === 'EACCES' ? ' (ports below 1024 need root or CAP_NET_BIND_SERVICE)' : ''
      reject(new ConfigInvalidError([{ path: 'api.listen', message: `cannot listen on ${options.listen}: ${error.message}${hint}; choose another address or port` }], { cause: error }))
    }
    server.once('error', onError)
    server.listen(port, host, () => {
      server.off('error', onError)
      resolve()
    })
  })
  const bound = (server.address() as AddressInfo).port
  const shownHost = host.includes(':') ? `[${host}]` : host
  return {
    url: `https://${shownHost}:${bound}${API_PATH}`,
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

/**
 * The simulator's HTTP plumbing: JSON in and out, XAPI's JSON-RPC endpoint (`POST /jsonrpc`: responses
 * are `Content-Type: application/json`, errors `{ code, message: <XAPI code>, data: [params] }` as XAPI
 * sends them), the routing of XAPI's HTTP handlers (export.ts, import.ts, xva-export.ts, xva-import.ts,
 * pool-dump.ts) and of the admin API (admin.ts), and the server itself (HTTP or HTTPS, its connections
 * tracked so closing can drop them).
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import type { ExportContext } from './export.js'
import { handleExport } from './export.js'
import { handleImport } from './import.js'
import { handlePoolDump } from './pool-dump.js'
import type { SimRpc } from './rpc.js'
import { XapiFailure, type XapiValue } from './store.js'
import { handleXvaExport } from './xva-export.js'
import { handleXvaImport } from './xva-import.js'

export async function readJson(req: IncomingMessage, limitBytes = 1024 * 1024): Promise<unknown> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > limitBytes) throw new RangeError('request body too large')
    chunks.push(chunk)
  }
  const text = Buffer.concat(chunks).toString('utf8')
  return text === '' ? {} : (JSON.parse(text) as unknown)
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) })
  res.end(text)
}

/** One JSON-RPC call; a call whose client went away (or a simulator closing) is aborted. */
async function handleRpc(rpc: SimRpc, closing: AbortSignal, req: IncomingMessage, res: ServerResponse): Promise<void> {
  let id: unknown = null
  try {
    const body = (await readJson(req)) as { id?: unknown; method?: unknown; params?: unknown; jsonrpc?: unknown }
    id = body.id ?? null
    if (typeof body.method !== 'string') throw new XapiFailure('MESSAGE_METHOD_UNKNOWN', [String(body.method)])
    const params = Array.isArray(body.params) ? (body.params as unknown[]) : []
    const controller = new AbortController()
    const onClose = (): void => controller.abort()
    res.on('close', onClose)
    const signal = AbortSignal.any([controller.signal, closing])
    const result: XapiValue = await rpc.call(body.method, params, signal)
    res.off('close', onClose)
    sendJson(res, 200, { jsonrpc: '2.0', result, id })
  } catch (error) {
    const f = error instanceof XapiFailure ? error : new XapiFailure('INTERNAL_ERROR', [error instanceof Error ? error.message : String(error)])
    if (!res.destroyed) sendJson(res, 200, { jsonrpc: '2.0', error: { code: 1, message: f.xapiCode, data: f.params }, id })
  }
}

interface SimRoutes {
  ctx: ExportContext
  /** the dumps `PUT /pool/xmldbdump` accepted */
  restoredDumps: Buffer[]
  admin: (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<void>
}

/** The request handler: each path to its handler; an unknown one is a 404, a handler's failure a 500 (or a dropped connection once the answer started). */
export function simRequestHandler(routes: SimRoutes): (req: IncomingMessage, res: ServerResponse) => void {
  const { ctx } = routes
  const is = (path: string, pathname: string): boolean => pathname === path || pathname === `${path}/`
  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://sim')
    const { method } = req
    const { pathname } = url
    let p: Promise<void>
    if (method === 'POST' && pathname === '/jsonrpc') p = handleRpc(ctx.rpc, ctx.closing, req, res)
    else if (method === 'GET' && is('/export_raw_vdi', pathname)) p = handleExport(ctx, req, res, url)
    else if (method === 'PUT' && is('/import_raw_vdi', pathname)) p = handleImport(ctx, req, res, url)
    else if ((method === 'GET' || method === 'PUT') && pathname === '/pool/xmldbdump') p = handlePoolDump(ctx, req, res, url, routes.restoredDumps)
    else if (method === 'GET' && is('/export', pathname)) p = handleXvaExport(ctx, req, res, url)
    else if (method === 'PUT' && is('/import', pathname)) p = handleXvaImport(ctx, req, res, url)
    else if (pathname.startsWith('/sim/')) p = routes.admin(req, res, url)
    else {
      sendJson(res, 404, { error: `not found: ${method} ${pathname}` })
      return
    }
    p.catch((error: unknown) => {
      if (!res.headersSent) sendJson(res, 500, ['INTERNAL_ERROR', String(error)])
      else res.destroy()
    })
  }
}

interface ListeningServer {
  server: Server
  /** the connections open now */
  sockets: Set<Socket>
  port: number
}

/** Starts an HTTP (or, with `tls`, HTTPS) server on host:port (0: a free one). */
export async function listen(
  onRequest: (req: IncomingMessage, res: ServerResponse) => void,
  o: { host: string; port: number; tls: { key: string | Buffer; cert: string | Buffer } | undefined },
): Promise<ListeningServer> {
  const server: Server = o.tls === undefined ? createHttpServer(onRequest) : createHttpsServer(o.tls, onRequest)
  server.keepAliveTimeout = 65_000
  const sockets = new Set<Socket>()
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(o.port, o.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  return { server, sockets, port: (server.address() as AddressInfo).port }
}

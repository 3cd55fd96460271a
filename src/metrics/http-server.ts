/**
 * The proxy's HTTP endpoints (node:http, no framework: three read-only routes):
 *   GET /metrics  Prometheus exposition of the registry; `Authorization: Bearer <token>` required when
 *                 a metricsToken is set (compared in constant time)
 *   GET /healthz  200 "ok" while the process runs (liveness)
 *   GET /readyz   200 {"ready":true,"reasons":[]} or 503 {"ready":false,"reasons":[...]} (readiness:
 *                 Redis reachable, pool started, not draining — decided by the `isReady` callback)
 * HEAD is accepted where GET is; other methods get 405, other paths 404.
 *
 * Default listen address is 127.0.0.1 (config http.listen): nothing is exposed to the network unless
 * the operator says so. `close()` stops accepting and waits for requests in flight; `destroy()` drops
 * every connection now.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ConfigInvalidError } from '../common/errors.js'
import type { Readiness } from './readiness.js'
import type { ProxyMetrics } from './registry.js'

interface HttpServerOptions {
  /** `host:port` (`[::1]:9464` for IPv6); port 0 picks a free one (see `url`) */
  listen: string
  metrics: ProxyMetrics
  isReady: () => Promise<Readiness>
  /** when set, /metrics requires `Authorization: Bearer <metricsToken>` */
  metricsToken?: string
  /** bound on isReady; default 5000 ms */
  readyTimeoutMs?: number
}

export interface HttpServerHandle {
  /** base URL, e.g. http://127.0.0.1:9464 */
  readonly url: string
  /** stops accepting connections and resolves when requests in flight are answered */
  close(): Promise<void>
  /** closes every connection now */
  destroy(): void
}

/** Parses `host:port`; throws ConfigInvalidError naming http.listen. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(listen)
  const port = m === null ? NaN : Number(m[2])
  if (m === null || port > 65_535) {
    throw new ConfigInvalidError([{ path: 'http.listen', message: `expected host:port such as 127.0.0.1:9464 or [::1]:9464, got ${JSON.stringify(listen)}` }])
  }
  const host = m[1]!.startsWith('[') ? m[1]!.slice(1, -1) : m[1]!
  return { host, port }
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest()
}

export async function startHttpServer(options: HttpServerOptions): Promise<HttpServerHandle> {
  const { host, port } = parseListen(options.listen)
  const readyTimeoutMs = options.readyTimeoutMs ?? 5000
  if (options.metricsToken === '') throw new ConfigInvalidError([{ path: 'http.metricsToken', message: 'must not be empty; unset it to serve /metrics without a token' }])
  const tokenDigest = options.metricsToken === undefined ? undefined : digest(options.metricsToken)

  const authorized = (req: IncomingMessage): boolean => {
    if (tokenDigest === undefined) return true
    const header = req.headers.authorization ?? ''
    const m = /^Bearer\s+(.+)$/i.exec(header)
    return m !== null && timingSafeEqual(digest(m[1]!.trim()), tokenDigest)
  }

  const send = (res: ServerResponse, status: number, contentType: string, body: string, head: boolean, headers: Record<string, string> = {}): void => {
    res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...headers })
    res.end(head ? undefined : body)
  }

  const readiness = async (): Promise<Readiness> => {
    let timer: NodeJS.Timeout | undefined
    try {
      return await Promise.race([
        options.isReady(),
        new Promise<Readiness>((resolve) => {
          timer = setTimeout(() => resolve({ ready: false, reasons: [`readiness checks did not answer within ${readyTimeoutMs} ms`] }), readyTimeoutMs)
        }),
      ])
    } catch (error) {
      return { ready: false, reasons: [`readiness check failed: ${error instanceof Error ? error.message : String(error)}`] }
    } finally {
      clearTimeout(timer)
    }
  }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0]
    const head = req.method === 'HEAD'
    if (path !== '/metrics' && path !== '/healthz' && path !== '/readyz') return send(res, 404, 'text/plain; charset=utf-8', 'not found: try /metrics, /healthz or /readyz\n', head)
    if (req.method !== 'GET' && !head) return send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', false, { allow: 'GET, HEAD' })
    if (path === '/healthz') return send(res, 200, 'text/plain; charset=utf-8', 'ok\n', head)
    if (path === '/readyz') {
      const r = await readiness()
      return send(res, r.ready ? 200 : 503, 'application/json', `${JSON.stringify({ ready: r.ready, reasons: r.reasons })}\n`, head)
    }
    if (!authorized(req)) return send(res, 401, 'text/plain; charset=utf-8', 'a bearer token is required for /metrics (http.metricsToken)\n', head, { 'www-authenticate': 'Bearer realm="backup-proxy"' })
    const text = await options.metrics.text()
    return send(res, 200, options.metrics.contentType, text, head)
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      // an exception while collecting metrics: answer 500 with the reason rather than hang the scrape
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', `internal error: ${error instanceof Error ? error.message : String(error)}\n`, false)
      else res.destroy(error instanceof Error ? error : undefined)
    })
  })
  server.keepAliveTimeout = 65_000

  await new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      reject(new ConfigInvalidError([{ path: 'http.listen', message: `cannot listen on ${options.listen} (${error.code ?? error.message}); choose a free address` }], { cause: error }))
    }
    server.once('error', onError)
    server.listen(port, host, () => {
      server.off('error', onError)
      resolve()
    })
  })
  const address = server.address() as AddressInfo
  const urlHost = address.family === 'IPv6' ? `[${address.address}]` : address.address

  let closed: Promise<void> | undefined
  const close = (): Promise<void> =>
    (closed ??= new Promise<void>((resolve, reject) => {
      server.close((error) => (error === undefined ? resolve() : reject(error)))
      server.closeIdleConnections()
    }))

  return {
    url: `http://${urlHost}:${address.port}`,
    close,
    destroy: () => {
      void close().catch(() => undefined) // the close error, if any, is reported to whoever awaits close()
      server.closeAllConnections()
    },
  }
}

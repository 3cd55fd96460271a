/**
 * What every HTTP handler of the simulator does first, as XAPI's HTTP handlers do: check the session
 * of the query, and fail with XAPI's JSON error body (and the request's task, when it names one).
 */
import type { ServerResponse } from 'node:http'
import type { ExportContext } from './export.js'

/** XAPI's error answer: `[code, ...params]` as JSON; the connection closes (the client may still be sending). */
export function sendXapiError(res: ServerResponse, status: number, code: string, params: string[]): void {
  if (res.headersSent || res.destroyed) return
  const body = JSON.stringify([code, ...params])
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), Connection: 'close' })
  res.end(body)
}

interface SimRequest {
  q: URLSearchParams
  /** the request's `task_id`, if any */
  taskRef: string | undefined
  /** fails the request's task (if any) and answers XAPI's error */
  fail: (status: number, code: string, params: string[]) => void
}

/** The request's query, task and failure path; undefined once it answered SESSION_INVALID (401). */
export function beginRequest(ctx: Pick<ExportContext, 'rpc' | 'tasks'>, res: ServerResponse, url: URL): SimRequest | undefined {
  const q = url.searchParams
  const taskRef = q.get('task_id') ?? undefined
  const fail = (status: number, code: string, params: string[]): void => {
    if (taskRef !== undefined) ctx.tasks.fail(taskRef, code, params)
    sendXapiError(res, status, code, params)
  }
  try {
    ctx.rpc.checkSession(q.get('session_id') ?? undefined)
  } catch {
    fail(401, 'SESSION_INVALID', [q.get('session_id') ?? ''])
    return undefined
  }
  return { q, taskRef, fail }
}

/**
 * What every transfer through XAPI's HTTP handlers shares (`/export_raw_vdi/`, `/import_raw_vdi/`,
 * `/export/`, `/import/`, `/pool/xmldbdump`), written once:
 *
 * - the handler's URL: the XAPI base URL checked (http or https), credentials and any path or query
 *   dropped, then the handler's path and its query (`session_id`, the handler's own parameters,
 *   `task_id`), in the order given, absent ones left out;
 * - the request: node:http for http:, node:https for https: with the certificate checked unless
 *   `allowUnauthorized` (and TLS 1.0 accepted, as `xen-api` does: older hosts speak nothing newer);
 * - an HTTP error: its body read (bounded) and mapped to an XapiError carrying the XAPI code of the body
 *   (`["VDI_IO_ERROR", ...]`), or one derived from the status.
 *
 * The XVA transfers (src/xva/http.ts) use it too: `xva` may import `xapi` (docs/architecture.md).
 */
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { XapiError } from '../common/errors.js'
import { xapiFailure } from './errors.js'

/** the most of an error body kept for the error's message */
export const ERROR_BODY_LIMIT = 64 * 1024

/**
 * The URL of one XAPI HTTP handler: `base` (`http(s)://host[:port]`, credentials ignored) with `pathname`
 * and `query` (entries whose value is undefined are left out). Throws an XapiError on a URL that is not
 * http(s).
 */
export function xapiHandlerUrl(base: string, pathname: string, query: Readonly<Record<string, string | undefined>>): URL {
  let url: URL
  try {
    url = new URL(base)
  } catch {
    throw new XapiError(`invalid XAPI URL "${base}": expected http(s)://host[:port]`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new XapiError(`invalid XAPI URL "${base}": protocol must be http or https`)
  url.username = ''
  url.password = ''
  url.pathname = pathname
  url.search = ''
  for (const [name, value] of Object.entries(query)) if (value !== undefined) url.searchParams.set(name, value)
  return url
}

interface XapiRequestOptions {
  method: 'GET' | 'PUT'
  headers: Record<string, string>
  /** https: accept a certificate that does not verify (XAPI's self-signed one) */
  allowUnauthorized: boolean
  signal?: AbortSignal | undefined
}

/** A request to an XAPI handler (not yet ended: the caller sends the body or calls `end()`). */
export function xapiRequest(url: URL, o: XapiRequestOptions): ClientRequest {
  const base = { method: o.method, headers: o.headers, ...(o.signal === undefined ? {} : { signal: o.signal }) }
  if (url.protocol !== 'https:') return httpRequest(url, base)
  return httpsRequest(url, { ...base, rejectUnauthorized: !o.allowUnauthorized, minVersion: 'TLSv1' as const })
}

/** The start of a response body (an error's, mostly), as text, at most ERROR_BODY_LIMIT characters; reads the body to its end. */
export async function readBodyText(res: IncomingMessage): Promise<string> {
  let text = ''
  for await (const chunk of res as AsyncIterable<Buffer>) if (text.length < ERROR_BODY_LIMIT) text += chunk.toString('utf8')
  return text.slice(0, ERROR_BODY_LIMIT)
}

/** HTTP error → XapiError: the body's XAPI error (`["CODE", ...params]`) when present, else by status. */
export function httpErrorFromBody(status: number, body: string, what: string): XapiError {
  try {
    const parsed = JSON.parse(body) as unknown
    if (Array.isArray(parsed) && typeof parsed[0] === 'string' && /^[A-Z_0-9]+$/.test(parsed[0])) {
      const [code, ...params] = parsed as unknown[]
      return xapiFailure(code as string, params.map(String), { what, httpStatus: status })
    }
  } catch {
    // not JSON: real XAPI answers errors with HTML or nothing
  }
  const code = status === 401 || status === 403 ? 'SESSION_INVALID' : status === 404 ? 'HANDLE_INVALID' : status >= 500 ? 'INTERNAL_ERROR' : 'HTTP_ERROR'
  return xapiFailure(code, [`HTTP ${status}`], { what, httpStatus: status })
}

/** The XapiError of a response that is not a success, its body read (a body that fails to read is left out). */
export async function httpError(res: IncomingMessage, what: string): Promise<XapiError> {
  return httpErrorFromBody(res.statusCode ?? 0, await readBodyText(res).catch(() => ''), what)
}

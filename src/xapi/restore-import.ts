/**
 * The upload half of a restore: `PUT /import_raw_vdi/?session_id&vdi&format=vhd&task_id` of a disk
 * stream into a VDI, with node:http (as src/xapi/export.ts does the GET: no extra dependency, a plain
 * Writable with backpressure through `pipeline`). The body is sent with `Content-Length` when the caller
 * knows it, chunked otherwise. XAPI answers once it has consumed the body; the XAPI task carries the
 * real outcome, so the caller waits for it too (`XapiClient.waitTask`) — cancelling that task (or the
 * signal) ends the upload.
 *
 * Errors: an HTTP error status becomes an XapiError with the XAPI code of the body
 * (`["VDI_IO_ERROR", ...]`) or one derived from the status; an abort is a CancelledError.
 */
import type { ClientRequest, IncomingMessage } from 'node:http'
import { Writable, type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { CancelledError, XapiError, errorCode } from '../common/errors.js'
import type { VdiImportDescriptor } from './descriptors.js'
import { httpError, xapiHandlerUrl, xapiRequest } from './http.js'

interface PutVdiImportOptions {
  signal?: AbortSignal
  /** sent as Content-Length when known */
  sizeBytes?: number
  /** called with each chunk of `body` once the socket no longer references it (e.g. VhdBlockPool.done) */
  onWritten?: (chunk: Buffer) => void
}

interface XapiPutOptions {
  allowUnauthorized: boolean
  signal?: AbortSignal
  /** sent as Content-Length when known, else the body is chunked */
  sizeBytes?: number
  /** names the upload in errors ("import into VDI …") */
  what: string
  /** maps a failure that is neither a cancel nor an XapiError (a network error) */
  networkFailure: (error: unknown) => Error
  /** see PutVdiImportOptions */
  onWritten?: (chunk: Buffer) => void
}

/**
 * The request as a Writable that reports each chunk once written to the socket (its write callback),
 * which `pipeline(body, req)` cannot: a pooled buffer is reused only then.
 */
function reportingSink(req: ClientRequest, onWritten: (chunk: Buffer) => void): Writable {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      const more = req.write(chunk, (error) => {
        if (error === undefined || error === null) onWritten(chunk)
      })
      if (more) callback()
      else req.once('drain', () => callback())
    },
    final(callback) {
      req.end(() => callback())
    },
    destroy(error, callback) {
      // also called after a normal finish (autoDestroy): the request then stays, its answer is awaited
      if (error !== null) req.destroy(error)
      callback(error)
    },
  })
  req.once('error', (error) => sink.destroy(error))
  return sink
}

/**
 * One upload to XAPI's HTTP handlers (`PUT /import_raw_vdi/`, `PUT /import/`): `body` piped to the
 * request; resolves once XAPI answered 2xx. XAPI may answer (an error) before reading the whole body, so
 * whichever of the upload and the answer settles first decides.
 */
export async function putToXapi(url: URL, body: Readable, o: XapiPutOptions): Promise<void> {
  const { signal, sizeBytes, what } = o
  signal?.throwIfAborted()
  const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream' }
  if (sizeBytes !== undefined) headers['Content-Length'] = String(sizeBytes)
  const req = xapiRequest(url, { method: 'PUT', headers, allowUnauthorized: o.allowUnauthorized, signal })
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.once('response', resolve)
    req.once('error', reject)
  })
  try {
    const sent = o.onWritten === undefined ? pipeline(body, req) : pipeline(body, reportingSink(req, o.onWritten))
    // observed here, awaited below: whichever of the two fails first is reported, the other is not unhandled
    sent.catch(() => undefined)
    response.catch(() => undefined)
    const first = await Promise.race([sent.then(() => undefined), response])
    const res = first ?? (await response)
    const status = res.statusCode ?? 0
    if (status < 200 || status >= 300) throw await httpError(res, what)
    await sent
    res.resume()
  } catch (error) {
    body.destroy()
    req.destroy()
    if (signal?.aborted === true) throw new CancelledError(`${what} was cancelled`, { cause: signal.reason })
    if (error instanceof XapiError) throw error
    throw o.networkFailure(error)
  }
}

/** Uploads `body` into the descriptor's VDI; resolves once XAPI answered 2xx. */
export async function putVdiImport(d: VdiImportDescriptor, body: Readable, options: PutVdiImportOptions = {}): Promise<void> {
  const what = `import into VDI ${d.vdiRef}`
  const url = xapiHandlerUrl(d.url, '/import_raw_vdi/', { session_id: d.sessionId, vdi: d.vdiRef, format: d.format, task_id: d.taskRef })
  await putToXapi(url, body, {
    allowUnauthorized: d.allowUnauthorized,
    what,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.sizeBytes === undefined ? {} : { sizeBytes: options.sizeBytes }),
    ...(options.onWritten === undefined ? {} : { onWritten: options.onWritten }),
    networkFailure: (error) => new XapiError(`${what} failed (${errorCode(error) ?? (error as Error).message}); the VDI is incomplete and is removed`, { cause: error, fields: { networkCode: errorCode(error) ?? '' } }),
  })
}

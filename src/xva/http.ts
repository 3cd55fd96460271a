/**
 * The HTTP halves of XVA transfers, from plain descriptors (XapiClient.vmExportDescriptor /
 * vmImportDescriptor) so they run in a pool thread: `openXvaExport` is XAPI's `GET /export/?ref&
 * use_compression&task_id` (the body as a Readable; XAPI sends no length), `putXvaImport` is `PUT
 * /import/?sr_id&task_id` of an XVA with its Content-Length (XAPI takes no chunked body). node:http, no
 * dependency. The XAPI task carries the outcome (and, for an import, the new VM): the caller waits for
 * it. HTTP error statuses become XapiErrors with the XAPI code of the body; an abort is a CancelledError.
 */
import type { Readable } from 'node:stream'
import { BackupProxyError, CancelledError, XapiError, errorCode } from '../common/errors.js'
import type { XvaExportDescriptor, XvaImportDescriptor } from '../xapi/descriptors.js'
import { ERROR_BODY_LIMIT, httpErrorFromBody, xapiHandlerUrl } from '../xapi/http.js'
import { rawGet, type RawResponse } from '../xapi/raw-get.js'
import { putToXapi } from '../xapi/restore-import.js'

function cancelled(what: string, signal: AbortSignal | undefined, error: unknown): Error {
  if (signal?.aborted === true) return new CancelledError(`${what} was cancelled`, { cause: signal.reason })
  if (error instanceof BackupProxyError) return error
  return new XapiError(`${what} failed (${errorCode(error) ?? (error as Error).message})`, { cause: error, fields: { networkCode: errorCode(error) ?? '' } })
}

/**
 * Opens the export; resolves with the body once XAPI answered 200. Destroying the body aborts the
 * request. Read with rawGet (src/xapi/raw-get.ts), whose body is the socket's reads uncopied: every byte
 * of a full backup goes through here, and node:http's parser copies each one.
 */
export async function openXvaExport(d: XvaExportDescriptor, signal?: AbortSignal): Promise<RawResponse> {
  const what = `XVA export of VM ${d.vmRef}`
  signal?.throwIfAborted()
  const url = xapiHandlerUrl(d.url, '/export/', { session_id: d.sessionId, ref: d.vmRef, use_compression: d.useCompression, task_id: d.taskRef })
  let res: RawResponse | undefined
  try {
    res = await rawGet(url, { headers: { Accept: 'application/octet-stream' }, allowUnauthorized: d.allowUnauthorized, ...(signal === undefined ? {} : { signal }) })
    if (res.statusCode !== 200) throw httpErrorFromBody(res.statusCode, await bodyText(res).catch(() => ''), what)
    return res
  } catch (error) {
    res?.destroy()
    throw cancelled(what, signal, error)
  }
}

async function bodyText(res: RawResponse): Promise<string> {
  let text = ''
  for await (const chunk of res as AsyncIterable<Buffer>) if (text.length < ERROR_BODY_LIMIT) text += chunk.toString('utf8')
  return text.slice(0, ERROR_BODY_LIMIT)
}

/** Uploads an XVA of `sizeBytes`; resolves once XAPI answered 2xx (the task then holds the VM). */
export async function putXvaImport(d: XvaImportDescriptor, body: Readable, sizeBytes: number, signal?: AbortSignal): Promise<void> {
  const what = `XVA import onto SR ${d.srRef}`
  signal?.throwIfAborted()
  const url = xapiHandlerUrl(d.url, '/import/', { session_id: d.sessionId, sr_id: d.srRef, task_id: d.taskRef })
  await putToXapi(url, body, { allowUnauthorized: d.allowUnauthorized, sizeBytes, what, ...(signal === undefined ? {} : { signal }), networkFailure: (error) => cancelled(what, signal, error) })
}

/**
 * XAPI's pool database dump over HTTP, as Xen Orchestra's pool metadata backup and restore use it
 * (`PATH_DB_DUMP` of @xen-orchestra/backups): `GET /pool/xmldbdump` answers the pool's database, `PUT
 * /pool/xmldbdump` restores one, each under an XAPI task (`task_id`) and the session (`session_id`).
 * The pool's and its master's records (what XO stores in the backup's metadata.json) come from the
 * generic `pool.get_all_records` / `host.get_record` calls.
 */
import type { IncomingMessage } from 'node:http'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { XapiError } from '../common/errors.js'
import type { XapiClient } from './client.js'
import { httpError, readBodyText, xapiHandlerUrl, xapiRequest } from './http.js'

const PATH_DB_DUMP = '/pool/xmldbdump'

interface PoolRecords {
  pool: Record<string, unknown> & { uuid: string }
  master: Record<string, unknown> | undefined
}

/** The pool's record and its master's. */
export async function poolRecords(client: XapiClient): Promise<PoolRecords> {
  const pools = (await client.call('pool.get_all_records')) as Record<string, Record<string, unknown>>
  const pool = Object.values(pools)[0]
  if (pool === undefined || typeof pool.uuid !== 'string') throw new XapiError(`the XAPI at ${client.url} has no pool record`)
  let master: Record<string, unknown> | undefined
  try {
    master = typeof pool.master === 'string' ? ((await client.call('host.get_record', pool.master)) as Record<string, unknown>) : undefined
  } catch {
    master = undefined // XO ignores errors of this lookup too
  }
  return { pool: pool as PoolRecords['pool'], master }
}

function dumpUrl(client: XapiClient, taskRef: string): URL {
  return xapiHandlerUrl(client.url, PATH_DB_DUMP, { session_id: client.sessionId, task_id: taskRef })
}

function send(url: URL, method: 'GET' | 'PUT', allowUnauthorized: boolean, signal: AbortSignal, body?: Readable): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = xapiRequest(url, { method, headers: { Accept: 'application/octet-stream' }, allowUnauthorized, signal })
    req.once('response', resolve)
    req.once('error', reject)
    if (body === undefined) req.end()
    else pipeline(body, req).catch(reject)
  })
}

/** The pool's database dump, whole (a few MiB for a large pool). */
export async function downloadPoolDump(client: XapiClient, options: { allowUnauthorized: boolean; signal: AbortSignal }): Promise<Buffer> {
  const taskRef = await client.createTask('Export pool metadata')
  const res = await send(dumpUrl(client, taskRef), 'GET', options.allowUnauthorized, options.signal)
  if (res.statusCode !== 200) throw await httpError(res, `the pool database dump of ${client.url}`)
  const chunks: Buffer[] = []
  for await (const c of res as AsyncIterable<Buffer>) chunks.push(c)
  await client.waitTask(taskRef)
  return Buffer.concat(chunks)
}

/** Sends a dump to the pool (XAPI's restore of its database), as XO's RestoreMetadataBackup does. */
export async function uploadPoolDump(client: XapiClient, body: Readable, options: { allowUnauthorized: boolean; signal: AbortSignal }): Promise<void> {
  const taskRef = await client.createTask('Import pool metadata')
  const res = await send(dumpUrl(client, taskRef), 'PUT', options.allowUnauthorized, options.signal, body)
  if (res.statusCode !== 200) throw await httpError(res, `the restore of the pool database of ${client.url}`)
  await readBodyText(res) // XAPI answers a restore with nothing more: read to its end
  await client.waitTask(taskRef)
}

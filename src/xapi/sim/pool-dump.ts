/**
 * The simulator's pool database dump, as XAPI serves it for Xen Orchestra's pool metadata backups:
 *
 *   GET /pool/xmldbdump?session_id=..[&task_id=..]   the pool's database as XML (`<database>` with one
 *                                                     `<table>` per class, one `<row>` per object)
 *   PUT /pool/xmldbdump?session_id=..[&task_id=..]   restores a dump (what XO's RestoreMetadataBackup sends)
 *
 * An empty PUT is xen-api's probe for a redirection (answered 200, nothing restored). A body of unknown
 * length is sent by xen-api with a huge Content-Length and the connection cut once it was all sent: the
 * dump is what arrived until the cut. A restore is not applied to the simulated objects: the simulator keeps the last dump it accepted
 * (`restoredDumps`, for tests to compare with what was backed up) once the body is a complete dump
 * (`<database` ... `</database>`); anything else is refused with XAPI's RESTORE_INCOMPATIBLE_VERSION-like
 * error and nothing is kept. Under `task_id`, the task succeeds or fails before the HTTP answer.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ExportContext } from './export.js'

/** Classes written to the dump (the rest of the store is transient: sessions, tasks, events). */
const DUMPED_CLASSES = ['pool', 'host', 'SR', 'VM', 'VDI', 'VBD', 'VIF', 'network']

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

/** The dump of the pool's current objects (deterministic: classes and refs in order). */
export function poolDump(ctx: Pick<ExportContext, 'pool'>): Buffer {
  const parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<database><manifest><pair key="schema_major_vsn" value="5"/><pair key="schema_minor_vsn" value="786"/></manifest>\n']
  for (const cls of DUMPED_CLASSES) {
    parts.push(`<table name="${cls}">\n`)
    for (const [ref, record] of ctx.pool.store.all(cls).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const fields = Object.entries(record).map(([k, v]) => ` ${escapeXml(k)}="${escapeXml(typeof v === 'string' ? v : JSON.stringify(v))}"`)
      parts.push(`<row ref="${escapeXml(ref)}"${fields.join('')}/>\n`)
    }
    parts.push('</table>\n')
  }
  parts.push('</database>\n')
  return Buffer.from(parts.join(''), 'utf8')
}

function answer(res: ServerResponse, status: number, body: string): void {
  if (res.headersSent || res.destroyed) return
  res.writeHead(status, { 'Content-Type': status === 200 ? 'text/plain' : 'application/json', 'Content-Length': Buffer.byteLength(body), Connection: 'close' })
  res.end(body)
}

/** Handles GET and PUT /pool/xmldbdump; never throws. `restored` receives each dump accepted by a PUT. */
export async function handlePoolDump(ctx: ExportContext, req: IncomingMessage, res: ServerResponse, url: URL, restored: Buffer[]): Promise<void> {
  const q = url.searchParams
  const taskRef = q.get('task_id') ?? undefined
  const fail = (status: number, code: string, params: string[]): void => {
    if (taskRef !== undefined && ctx.tasks.isPending(taskRef)) ctx.tasks.fail(taskRef, code, params)
    answer(res, status, JSON.stringify([code, ...params]))
  }
  try {
    ctx.rpc.checkSession(q.get('session_id') ?? undefined)
  } catch {
    return fail(401, 'SESSION_INVALID', [q.get('session_id') ?? ''])
  }
  try {
    if (req.method === 'GET') {
      const dump = poolDump(ctx)
      if (taskRef !== undefined) ctx.tasks.succeed(taskRef, '')
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': dump.length })
      res.end(dump)
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    try {
      for await (const chunk of req as AsyncIterable<Buffer>) {
        size += chunk.length
        if (size > 256 * 1024 * 1024) return fail(413, 'RESTORE_TARGET_MISSING_DEVICE', ['dump larger than 256 MiB'])
        chunks.push(chunk)
      }
    } catch {
      // the client cut the connection once its body was sent (unknown length): judge what arrived
    }
    const body = Buffer.concat(chunks)
    if (body.length === 0 && taskRef === undefined) return answer(res, 200, '')
    const text = body.toString('utf8')
    if (!text.includes('<database') || !text.trimEnd().endsWith('</database>')) return fail(400, 'RESTORE_INCOMPATIBLE_VERSION', ['the body is not a complete pool database dump'])
    restored.push(body)
    if (taskRef !== undefined) ctx.tasks.succeed(taskRef, '')
    answer(res, 200, '')
  } catch (error) {
    fail(500, 'INTERNAL_ERROR', [String(error)])
  }
}

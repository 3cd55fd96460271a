/**
 * `GET /export_raw_vdi/?session_id&vdi&format=vhd|raw[&base][&task_id]` of the simulator.
 *
 * `format=vhd` streams a dynamic VHD (or a differencing one against `base`) exactly as XAPI lays it out:
 * footer copy, header, BAT, then the present blocks (bitmap + 2 MiB) in BAT order, then the footer.
 * `format=raw` streams the whole virtual disk, zeros for absent blocks. Both send Content-Length.
 * Blocks are written as slices of the pattern pool (no copies), with backpressure: the writer waits for
 * 'drain' whenever `write()` returns false. The export runs under the given task (progress, success,
 * failure; `task.cancel` aborts it). Faults from `FaultSet` are applied here.
 *
 * HTTP errors carry the XAPI error as a JSON array body (`["SESSION_INVALID", "<id>"]`): 401 for a bad
 * session, 404 for an unknown VDI, 400 for bad parameters, the fault's status for injected errors.
 */
import { once } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { DiskContent, PatternPool } from './disk-content.js'
import type { ExportFault, FaultSet } from './faults.js'
import type { SimPool } from './pool.js'
import type { SimRpc } from './rpc.js'
import { XapiFailure, text } from './store.js'
import type { SimTasks } from './tasks.js'
import { FULL_BITMAP, VHD_BLOCK_BYTES, vhdLayout } from './vhd-encoder.js'
import { sendXapiError } from './http-request.js'

const ZERO_BLOCK = Buffer.alloc(VHD_BLOCK_BYTES)

export interface ExportContext {
  pool: SimPool
  rpc: SimRpc
  tasks: SimTasks
  faults: FaultSet
  patterns: PatternPool
  /** aborted when the simulator closes */
  closing: AbortSignal
}


function resolveVdi(pool: SimPool, id: string): string {
  if (pool.store.has('VDI', id)) return id
  if (id.startsWith('OpaqueRef:')) throw new XapiFailure('HANDLE_INVALID', ['VDI', id])
  return pool.store.refByUuid('VDI', id) // throws UUID_INVALID
}

/** Writes buffers to the response honouring backpressure, abort, and the faults of this export. */
class Sender {
  sent = 0
  private readonly startMs = Date.now()
  constructor(
    private readonly res: ServerResponse,
    private readonly faults: ExportFault[],
    private readonly signal: AbortSignal,
  ) {}

  private async write(buf: Buffer): Promise<void> {
    if (this.signal.aborted) throw this.signal.reason instanceof Error ? this.signal.reason : new Error('export aborted')
    if (!this.res.write(buf)) {
      await once(this.res, 'drain', { signal: this.signal })
    }
  }

  async send(bufIn: Buffer): Promise<void> {
    let buf = bufIn
    const start = this.sent
    const end = start + buf.length
    for (const f of this.faults) {
      if (f.kind === 'corrupt' && f.offset >= start && f.offset < end) {
        buf = Buffer.from(buf)
        buf[f.offset - start] = (buf[f.offset - start] ?? 0) ^ 0xff
      }
      if ((f.kind === 'reset' || f.kind === 'stall') && f.afterBytes < end) {
        const keep = Math.max(0, f.afterBytes - start)
        if (keep > 0) {
          this.res.write(buf.subarray(0, keep))
          this.sent += keep
        }
        if (f.kind === 'reset') {
          // let the kept bytes leave, then reset the connection (RST, not FIN: the client sees ECONNRESET)
          await new Promise<void>((resolve) => this.res.write('', () => resolve()))
          this.res.socket?.resetAndDestroy()
          throw new Error('injected fault: connection reset')
        }
        await new Promise<void>((resolve) => this.signal.addEventListener('abort', () => resolve(), { once: true }))
        throw new Error('injected fault: stalled export aborted')
      }
    }
    const slow = this.faults.find((f) => f.kind === 'slow')
    if (slow === undefined) {
      await this.write(buf)
      this.sent = end
      return
    }
    const piece = Math.max(4096, Math.min(256 * 1024, Math.floor(slow.bytesPerSecond / 20)))
    for (let off = 0; off < buf.length; off += piece) {
      const part = buf.subarray(off, off + piece)
      await this.write(part)
      this.sent += part.length
      const aheadMs = (this.sent / slow.bytesPerSecond) * 1000 - (Date.now() - this.startMs)
      if (aheadMs > 0) await new Promise((r) => setTimeout(r, aheadMs))
    }
  }
}

interface ExportRequest {
  vdiRef: string
  baseRef: string | undefined
  format: 'vhd' | 'raw'
}

/** The request's VDI, base and format, checked; throws an XapiFailure for XAPI to answer. */
function parseExportRequest(ctx: ExportContext, q: URLSearchParams): ExportRequest {
  const format = q.get('format') ?? 'raw'
  if (format !== 'vhd' && format !== 'raw') throw new XapiFailure('FORMAT_NOT_SUPPORTED', [format])
  const vdiRef = resolveVdi(ctx.pool, q.get('vdi') ?? '')
  const base = q.get('base')
  const baseRef = base === null || base === '' ? undefined : resolveVdi(ctx.pool, base)
  // a VDI whose data was destroyed (cbt.ts) keeps only its CBT metadata: nothing to export or diff against
  for (const ref of [vdiRef, baseRef]) if (ref !== undefined && ctx.pool.store.get('VDI', ref).type === 'cbt_metadata') throw new XapiFailure('VDI_INCOMPATIBLE_TYPE', [ref, 'cbt_metadata'])
  if (baseRef !== undefined && format === 'raw') throw new XapiFailure('FORMAT_NOT_SUPPORTED', ['raw export with base'])
  return { vdiRef, baseRef, format }
}

/** The faults set on the VDI; a fault set on a disk also hits exports of its snapshots (what a backup exports). */
function takeFaults(ctx: ExportContext, vdiRef: string): ExportFault[] {
  const vdi = ctx.pool.store.get('VDI', vdiRef)
  const vdiUuid = text(vdi.uuid)
  const snapshotOf = text(vdi.snapshot_of)
  return ctx.faults.take(ctx.pool.store.has('VDI', snapshotOf) ? [vdiUuid, text(ctx.pool.store.get('VDI', snapshotOf).uuid)] : vdiUuid)
}

/** The whole virtual disk, zeros for absent blocks. */
async function sendRaw(ctx: ExportContext, res: ServerResponse, sender: Sender, disk: DiskContent, taskRef: string | undefined): Promise<void> {
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': disk.virtualSizeBytes })
  const count = disk.blockCount
  for (let b = 0; b < count; b++) {
    const g = disk.generations.get(b)
    if (g === undefined) await sender.send(ZERO_BLOCK)
    else for (const part of disk.blockParts(ctx.patterns, b, g)) await sender.send(part)
    if (taskRef !== undefined && (b & 255) === 255) ctx.tasks.progress(taskRef, b / count)
  }
}

/** A dynamic VHD of the disk, or a differencing one against the base: its present (or changed) blocks in BAT order. */
async function sendVhd(ctx: ExportContext, res: ServerResponse, sender: Sender, r: ExportRequest, taskRef: string | undefined): Promise<void> {
  const { pool } = ctx
  const disk = pool.disks.get(r.vdiRef) as DiskContent
  const base = r.baseRef === undefined ? undefined : (pool.disks.get(r.baseRef) as DiskContent)
  const blocks = base === undefined ? disk.presentBlocks() : disk.changedSince(base)
  const baseUuid = r.baseRef === undefined ? undefined : text(pool.store.get('VDI', r.baseRef).uuid)
  const layout = vhdLayout({
    virtualSizeBytes: disk.virtualSizeBytes,
    uniqueId: text(pool.store.get('VDI', r.vdiRef).uuid),
    timestampMs: pool.vdiTimes.get(r.vdiRef) ?? 0,
    blocks,
    ...(r.baseRef === undefined || baseUuid === undefined ? {} : { parent: { uniqueId: baseUuid, timestampMs: pool.vdiTimes.get(r.baseRef) ?? 0, name: `${baseUuid}.vhd` } }),
  })
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': layout.totalBytes })
  await sender.send(layout.head)
  for (let i = 0; i < blocks.length; i++) {
    const b = blocks[i] as number
    const g = disk.generations.get(b)
    await sender.send(FULL_BITMAP)
    if (g === undefined) await sender.send(ZERO_BLOCK)
    else for (const part of disk.blockParts(ctx.patterns, b, g)) await sender.send(part)
    if (taskRef !== undefined && (i & 255) === 255) ctx.tasks.progress(taskRef, i / blocks.length)
  }
  await sender.send(layout.footer)
}

/** What ends the export: the client closing, the simulator closing, the task cancelled; undefined once it answered an unknown task. */
function exportSignal(ctx: ExportContext, res: ServerResponse, taskRef: string | undefined): AbortSignal | undefined {
  const abort = new AbortController()
  const signals = [abort.signal, ctx.closing]
  if (taskRef !== undefined) {
    try {
      signals.push(ctx.tasks.bind(taskRef))
    } catch (error) {
      const f = error as XapiFailure
      sendXapiError(res, 404, f.xapiCode, f.params)
      return undefined
    }
  }
  res.on('close', () => {
    if (!res.writableFinished) abort.abort(new Error('client closed the connection'))
  })
  return AbortSignal.any(signals)
}

/** Handles one export request; never throws (errors become HTTP errors or a failed task). */
export async function handleExport(ctx: ExportContext, _req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const q = url.searchParams
  const taskRef = q.get('task_id') ?? undefined
  const failTask = (code: string, params: string[]): void => {
    if (taskRef !== undefined) ctx.tasks.fail(taskRef, code, params)
  }
  try {
    ctx.rpc.checkSession(q.get('session_id') ?? undefined)
  } catch {
    sendXapiError(res, 401, 'SESSION_INVALID', [q.get('session_id') ?? ''])
    return
  }
  let request: ExportRequest
  try {
    request = parseExportRequest(ctx, q)
  } catch (error) {
    const f = error instanceof XapiFailure ? error : new XapiFailure('INTERNAL_ERROR', [String(error)])
    failTask(f.xapiCode, f.params)
    sendXapiError(res, f.xapiCode === 'UUID_INVALID' || f.xapiCode === 'HANDLE_INVALID' ? 404 : 400, f.xapiCode, f.params)
    return
  }
  const faults = takeFaults(ctx, request.vdiRef)
  const httpFault = faults.find((f) => f.kind === 'http-error')
  if (httpFault !== undefined) {
    const code = httpFault.xapiCode ?? 'INTERNAL_ERROR'
    failTask(code, ['injected fault'])
    sendXapiError(res, httpFault.status ?? 500, code, ['injected fault'])
    return
  }
  const signal = exportSignal(ctx, res, taskRef)
  if (signal === undefined) return
  const sender = new Sender(res, faults, signal)
  try {
    if (request.format === 'raw') await sendRaw(ctx, res, sender, ctx.pool.disks.get(request.vdiRef) as DiskContent, taskRef)
    else await sendVhd(ctx, res, sender, request, taskRef)
    await new Promise<void>((resolve) => res.end(resolve))
    if (taskRef !== undefined) ctx.tasks.succeed(taskRef, '')
  } catch (error) {
    const reason = signal.reason as unknown
    if (reason instanceof XapiFailure) failTask(reason.xapiCode, reason.params)
    else failTask('VDI_IO_ERROR', [error instanceof Error ? error.message : String(error)])
    if (!res.destroyed) res.destroy()
  }
}

/**
 * `PUT /import_raw_vdi/?session_id&vdi&format=vhd[&task_id]` of the simulator: the body is a dynamic VHD
 * (what a restore sends), parsed and validated with the project's VHD parser (src/vhd), and its blocks
 * become the VDI's content (`DiskContent.storeBlock`), so `export_raw_vdi?format=raw` returns them.
 * Sectors a block's bitmap leaves unset are zeros (a differencing VHD: the VDI's current bytes, so a delta
 * applies onto an existing VDI, as a replication imports it); blocks absent from the VHD keep the VDI's content
 * (zeros for a VDI just created), as XAPI does for a VHD import. The content changes only once the
 * whole body was received and validated: a failed or cancelled import leaves the VDI as it was.
 *
 * The import runs under `task_id` when given: progress, success before the HTTP answer (so a client
 * waiting for the task sees it settle), failure with the XAPI code, and `task.cancel` aborts it.
 * Only `format=vhd` is simulated. Errors are HTTP statuses with the XAPI error as a JSON array body.
 * Faults with `on: 'import'` (faults.ts): `http-error` answers at once, `stall` stops reading the body.
 * An SR with a capacity (vm-ops.ts) fails the import with SR_BACKEND_FAILURE_44 once it would overflow.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { sectorIsSet } from '../../vhd/bitmap.js'
import { DISK_TYPES } from '../../vhd/constants.js'
import { openVhdStream } from '../../vhd/stream-parser.js'
import type { ExportContext } from './export.js'
import { XapiFailure, text } from './store.js'
import { SECTOR_BYTES, VHD_BLOCK_BYTES } from './vhd-encoder.js'
import { beginRequest, sendXapiError } from './http-request.js'


/**
 * A block's bytes (copied: the source chunk is not kept): the sectors its bitmap does not mark set are
 * zeros in a dynamic VHD, and keep the VDI's current bytes (`current`) in a differencing one (a delta
 * imported onto an existing VDI, as XAPI applies it).
 */
function blockBytes(bitmap: Buffer, data: Buffer, current: Buffer | undefined): Buffer | undefined {
  const out = Buffer.from(data)
  let any = false
  for (let s = 0; s < VHD_BLOCK_BYTES / SECTOR_BYTES; s++) {
    if (sectorIsSet(bitmap, s)) any = true
    else if (current !== undefined) current.copy(out, s * SECTOR_BYTES, s * SECTOR_BYTES, (s + 1) * SECTOR_BYTES)
    else out.fill(0, s * SECTOR_BYTES, (s + 1) * SECTOR_BYTES)
  }
  return any || current !== undefined ? out : undefined
}

/** The body up to `afterBytes`, then nothing until `signal` aborts (a `stall` fault). */
export async function* stalled(req: AsyncIterable<Buffer>, afterBytes: number, signal: AbortSignal): AsyncGenerator<Buffer> {
  let seen = 0
  for await (const chunk of req) {
    if (seen + chunk.length > afterBytes) {
      if (afterBytes > seen) yield chunk.subarray(0, afterBytes - seen)
      await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })))
      throw new Error('injected fault: stalled import aborted')
    }
    seen += chunk.length
    yield chunk
  }
}

/** Handles one import request; never throws (errors become HTTP errors and a failed task). */
export async function handleImport(ctx: ExportContext, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const request = beginRequest(ctx, res, url)
  if (request === undefined) return
  const { q, taskRef, fail } = request
  let vdiRef: string
  try {
    const format = q.get('format') ?? 'raw'
    if (format !== 'vhd') throw new XapiFailure('FORMAT_NOT_SUPPORTED', [format, 'the simulator imports format=vhd only'])
    const id = q.get('vdi') ?? ''
    vdiRef = ctx.pool.store.has('VDI', id) ? id : ctx.pool.store.refByUuid('VDI', id)
  } catch (error) {
    const f = error instanceof XapiFailure ? error : new XapiFailure('INTERNAL_ERROR', [String(error)])
    return fail(f.xapiCode === 'UUID_INVALID' ? 404 : 400, f.xapiCode, f.params)
  }
  const disk = ctx.pool.disks.get(vdiRef)
  if (disk === undefined) return fail(404, 'HANDLE_INVALID', ['VDI', vdiRef])
  const faults = ctx.faults.take(text(ctx.pool.store.get('VDI', vdiRef).uuid), 'import')
  const httpFault = faults.find((f) => f.kind === 'http-error')
  if (httpFault !== undefined) return fail(httpFault.status ?? 500, httpFault.xapiCode ?? 'INTERNAL_ERROR', ['injected fault'])

  const signals = [ctx.closing]
  if (taskRef !== undefined) {
    try {
      signals.push(ctx.tasks.bind(taskRef))
    } catch (error) {
      const f = error as XapiFailure
      return sendXapiError(res, 404, f.xapiCode, f.params)
    }
  }
  const signal = AbortSignal.any(signals)
  const staged = new Map<number, Buffer | undefined>()
  try {
    const stall = faults.find((f) => f.kind === 'stall')
    const vhd = await openVhdStream(stall === undefined ? req : stalled(req, stall.afterBytes, signal), { signal })
    if (vhd.header.blockSizeBytes !== VHD_BLOCK_BYTES) throw new XapiFailure('VDI_IO_ERROR', [`the simulator imports 2 MiB blocks only, got ${vhd.header.blockSizeBytes}`])
    if (vhd.footer.currentSizeBytes > disk.virtualSizeBytes) {
      throw new XapiFailure('VDI_TOO_SMALL', [vdiRef, String(disk.virtualSizeBytes), String(vhd.footer.currentSizeBytes)])
    }
    const total = Math.max(1, vhd.blockOrder.length)
    let newBlocks = 0
    const differencing = vhd.footer.diskType === DISK_TYPES.DIFFERENCING
    for await (const block of vhd.blocks()) {
      const g = disk.generations.get(block.index)
      const current = differencing && g !== undefined ? Buffer.concat(disk.blockParts(ctx.patterns, block.index, g)) : undefined
      const bytes = blockBytes(block.bitmap, block.data, current)
      if (bytes !== undefined && !disk.generations.has(block.index) && staged.get(block.index) === undefined) {
        // an SR with a capacity fills up: XAPI's "insufficient space" before the block is written
        ctx.rpc.vmOps.checkSpace(vdiRef, ++newBlocks * VHD_BLOCK_BYTES)
      }
      staged.set(block.index, bytes)
      if (taskRef !== undefined && (staged.size & 15) === 0) ctx.tasks.progress(taskRef, staged.size / total)
    }
  } catch (error) {
    req.resume()
    const reason = signal.reason as unknown
    if (signal.aborted && reason instanceof XapiFailure && reason.xapiCode === 'TASK_CANCELLED') return sendXapiError(res, 400, reason.xapiCode, reason.params)
    const f = error instanceof XapiFailure ? error : new XapiFailure('VDI_IO_ERROR', [error instanceof Error ? error.message : String(error)])
    return fail(f.xapiCode === 'VDI_TOO_SMALL' ? 400 : 500, f.xapiCode, f.params)
  }
  if (!ctx.pool.disks.has(vdiRef)) return fail(404, 'HANDLE_INVALID', ['VDI', vdiRef])
  const generation = ctx.pool.nextGeneration()
  for (const [b, data] of staged) {
    if (data === undefined) {
      disk.generations.delete(b)
      disk.stored.delete(b)
    } else disk.storeBlock(b, data, generation)
  }
  ctx.pool.contentChanged(vdiRef)
  if (taskRef !== undefined) ctx.tasks.succeed(taskRef, '')
  res.writeHead(200, { 'Content-Length': 0 })
  res.end()
}

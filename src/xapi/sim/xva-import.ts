/**
 * `PUT /import/?session_id&sr_id[&task_id]` of the simulator: an XVA (plain, gzip or zstd — detected
 * from its first bytes, as XAPI does) becomes a new halted VM with its VDIs (on `sr_id`, else the pool's
 * default SR), VBDs and VIFs (on the network of the same name, else the pool's first). As XAPI's import:
 * `ova.xml` first, then for each VDI its chunks in increasing order, each followed by its checksum file
 * (`.xxhash`: XXH64, or `.checksum`: SHA-1 of older exports), missing chunks are zeros. A checksum that
 * does not match, a chunk out of order, an unknown entry or a truncated archive fails the import with
 * `IMPORT_ERROR` and nothing is created: the simulator stages everything and creates the objects only
 * once the whole archive checked out (XAPI creates early and removes them on failure — same outcome).
 * The task's result is the new VM's ref in an XML-RPC array, as XAPI's. A `stall` fault with `on: 'import'`
 * and no vdiUuid (faults.ts) stops reading the archive after `afterBytes` until the task is cancelled.
 */
import { createHash } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { PassThrough, Readable } from 'node:stream'
import { detectCompression, decompressStream } from '../../xva/compression.js'
import { parseOvaXml, type OvaObject, type XmlRpcValue } from '../../xva/ova-xml.js'
import { readTar } from '../../xva/tar.js'
import { xxh64Hex } from '../../xva/xxhash64.js'
import type { ExportContext } from './export.js'
import { NULL_REF, XapiFailure, text } from './store.js'
import { VHD_BLOCK_BYTES } from './vhd-encoder.js'
import { XVA_CHUNK_BYTES } from './xva-export.js'
import { beginRequest } from './http-request.js'
import { stalled } from './import.js'


function importError(message: string): XapiFailure {
  return new XapiFailure('IMPORT_ERROR', [message])
}

/** The body, decompressed when it starts with a gzip or zstd magic number. */
async function plainBody(req: AsyncIterable<Buffer>): Promise<AsyncIterable<Buffer>> {
  const it = req[Symbol.asyncIterator]()
  let head = Buffer.alloc(0)
  const firsts: Buffer[] = []
  while (head.length < 4) {
    const r = await it.next()
    if (r.done === true) break
    firsts.push(r.value)
    head = Buffer.concat([head, r.value])
  }
  async function* rest(): AsyncGenerator<Buffer> {
    yield* firsts
    for (let r = await it.next(); r.done !== true; r = await it.next()) yield r.value
  }
  const c = detectCompression(head)
  if (c === 'none') return rest()
  const out = new PassThrough()
  const d = decompressStream(c)
  Readable.from(rest()).on('error', (e) => out.destroy(e)).pipe(d).on('error', (e) => out.destroy(importError(`the ${c} stream is corrupt: ${e.message}`))).pipe(out)
  return out
}

interface StagedVdi {
  object: OvaObject
  size: number
  blocks: Map<number, Buffer>
  lastChunk: number
}

/** Reads and checks the whole archive: the header objects and each VDI's content by 2 MiB block. */
async function stage(body: AsyncIterable<Buffer>, onProgress: (fraction: number) => void): Promise<{ objects: OvaObject[]; vdis: Map<string, StagedVdi> }> {
  let objects: OvaObject[] | undefined
  const vdis = new Map<string, StagedVdi>()
  let total = 0
  let done = 0
  let pending: { name: string; vdi: StagedVdi; chunk: number; data: Buffer } | undefined
  for await (const entry of readTar(body, { maxEntryBytes: 16 * 1024 * 1024 })) {
    if (objects === undefined) {
      if (entry.name !== 'ova.xml') throw importError(`the archive starts with ${entry.name}, not ova.xml`)
      try {
        objects = parseOvaXml(entry.data.toString('utf8')).objects
      } catch (error) {
        throw importError((error as Error).message)
      }
      for (const o of objects.filter((x) => x.class === 'VDI')) {
        const size = Number(o.snapshot.virtual_size)
        if (!Number.isSafeInteger(size) || size <= 0) throw importError(`VDI ${o.id} has no valid virtual_size`)
        vdis.set(o.id, { object: o, size, blocks: new Map(), lastChunk: -1 })
        total += size
      }
      continue
    }
    if (pending !== undefined) {
      const ext = entry.name.slice(pending.name.length)
      if (!entry.name.startsWith(pending.name) || (ext !== '.xxhash' && ext !== '.checksum')) throw importError(`expected the checksum of ${pending.name}, found ${entry.name}`)
      const actual = ext === '.xxhash' ? xxh64Hex(pending.data) : createHash('sha1').update(pending.data).digest('hex')
      const stored = entry.data.toString('latin1').trim()
      if (stored.toLowerCase() !== actual.toLowerCase()) throw importError(`Block ${pending.name} checksum failed: original = ${stored}; recomputed = ${actual}`)
      const { vdi, chunk, data } = pending
      const b = Math.floor((chunk * XVA_CHUNK_BYTES) / VHD_BLOCK_BYTES)
      let block = vdi.blocks.get(b)
      if (block === undefined) vdi.blocks.set(b, (block = Buffer.alloc(VHD_BLOCK_BYTES)))
      data.copy(block, (chunk * XVA_CHUNK_BYTES) % VHD_BLOCK_BYTES)
      done += data.length
      onProgress(done / Math.max(1, total))
      pending = undefined
      continue
    }
    const m = /^(Ref:\d+)\/(\d{8})$/.exec(entry.name)
    const vdi = m === null ? undefined : vdis.get(m[1]!)
    if (m === null || vdi === undefined) throw importError(`unexpected entry ${entry.name}`)
    const chunk = Number(m[2])
    if (chunk <= vdi.lastChunk) throw importError(`chunk ${entry.name} is out of order`)
    if ((chunk + 1) * XVA_CHUNK_BYTES > vdi.size + XVA_CHUNK_BYTES - 1 || entry.data.length > XVA_CHUNK_BYTES) throw importError(`chunk ${entry.name} is outside the disk`)
    vdi.lastChunk = chunk
    pending = { name: entry.name, vdi, chunk, data: Buffer.from(entry.data) }
  }
  if (objects === undefined) throw importError('the archive is empty')
  if (pending !== undefined) throw importError(`the checksum of ${pending.name} is missing`)
  for (const [id, v] of vdis) {
    if (v.lastChunk !== Math.ceil(v.size / XVA_CHUNK_BYTES) - 1) throw importError(`VDI ${id} is truncated: its last chunk is missing`)
  }
  return { objects, vdis }
}

const str = (v: XmlRpcValue | undefined, fallback = ''): string => (typeof v === 'string' ? v : fallback)

/** Creates the staged VM; its ref. */
function create(ctx: ExportContext, srRef: string, objects: OvaObject[], vdis: Map<string, StagedVdi>): string {
  const { pool } = ctx
  const vmRefOf = new Map<string, string>()
  const vmObject = objects.find((o) => o.class === 'VM')
  if (vmObject === undefined) throw importError('ova.xml has no VM')
  const vmRef = ctx.rpc.vmOps.createVm({ ...vmObject.snapshot, is_a_template: false })
  vmRefOf.set(vmObject.id, vmRef)
  const vdiRefOf = new Map<string, string>()
  for (const [id, v] of vdis) {
    const r = v.object.snapshot
    const ref = pool.createVdi({ name_label: str(r.name_label), name_description: str(r.name_description), SR: srRef, virtual_size: v.size, type: str(r.type, 'user'), other_config: r.other_config })
    const disk = pool.disks.get(ref)!
    const generation = pool.nextGeneration()
    for (const [b, data] of v.blocks) if (data.some((x) => x !== 0)) disk.storeBlock(b, data, generation)
    pool.contentChanged(ref)
    vdiRefOf.set(id, ref)
  }
  for (const o of objects.filter((x) => x.class === 'VBD' && x.snapshot.VM === vmObject.id)) {
    const vdi = vdiRefOf.get(str(o.snapshot.VDI))
    ctx.rpc.vmOps.createVbd({ ...o.snapshot, VM: vmRef, VDI: vdi ?? NULL_REF, empty: vdi === undefined })
  }
  const networks = objects.filter((x) => x.class === 'network')
  for (const o of objects.filter((x) => x.class === 'VIF' && x.snapshot.VM === vmObject.id)) {
    const name = str(networks.find((n) => n.id === o.snapshot.network)?.snapshot.name_label)
    const network = pool.store.all('network').find(([, n]) => text(n.name_label) === name)?.[0] ?? pool.networkRef
    ctx.rpc.vmOps.createVif({ ...o.snapshot, VM: vmRef, network })
  }
  return vmRef
}

/** Handles one XVA import request; never throws (errors become HTTP errors and a failed task). */
export async function handleXvaImport(ctx: ExportContext, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const request = beginRequest(ctx, res, url)
  if (request === undefined) return
  const { q, taskRef, fail } = request
  const srId = q.get('sr_id') ?? ''
  let srRef: string
  try {
    srRef = srId === '' ? text(ctx.pool.store.get('pool', ctx.pool.poolRef).default_SR) : ctx.pool.store.has('SR', srId) ? srId : ctx.pool.store.refByUuid('SR', srId)
  } catch (error) {
    const f = error as XapiFailure
    return fail(404, f.xapiCode, f.params)
  }
  // faults with `on: 'import'` and no vdiUuid: `stall` stops reading the body until the task is cancelled
  const stall = ctx.faults.take([], 'import').find((f) => f.kind === 'stall')
  try {
    const cancelled = taskRef === undefined ? ctx.closing : AbortSignal.any([ctx.closing, ctx.tasks.bind(taskRef)])
    const body = stall === undefined ? (req as AsyncIterable<Buffer>) : stalled(req as AsyncIterable<Buffer>, stall.afterBytes, cancelled)
    const { objects, vdis } = await stage(await plainBody(body), (f) => {
      if (taskRef !== undefined) ctx.tasks.progress(taskRef, f)
    })
    const vmRef = create(ctx, srRef, objects, vdis)
    if (taskRef !== undefined) ctx.tasks.succeed(taskRef, `<array><data><value>${vmRef}</value></data></array>`)
    res.writeHead(200, { 'Content-Length': 0 })
    res.end()
  } catch (error) {
    req.resume()
    const f = error instanceof XapiFailure ? error : importError(error instanceof Error ? error.message : String(error))
    fail(500, f.xapiCode, f.params)
  }
}

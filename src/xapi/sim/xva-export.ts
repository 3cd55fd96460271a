/**
 * `GET /export/?session_id&ref=|uuid=&use_compression=true|zstd|false[&task_id]` of the simulator: a VM
 * (or snapshot) as an XVA, laid out as XAPI's export writes it — a tar of `ova.xml` (the VM, its VBDs,
 * VDIs, their SRs, its VIFs and their networks, each with an archive id `Ref:<n>` and every reference
 * rewritten, ova-xml.ts), then each VDI in the lexicographic order of its id, cut in 1 MiB chunks named
 * `Ref:<n>/<8-digit chunk>`, each followed by `<chunk>.xxhash` (XXH64 as 16 upper-case hex digits, what
 * XAPI writes since 8.1). Chunks of blocks never written are skipped, except the first and the last
 * (XAPI always sends those), then the two end blocks. `use_compression=true` gzips the whole archive,
 * `zstd` compresses it with zstd. No Content-Length (the size is not known up front, as with XAPI).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { compressStream } from '../../xva/compression.js'
import { ovaXml, type OvaObject, type XmlRpcValue } from '../../xva/ova-xml.js'
import { TAR_END, tarHeader, tarPadding } from '../../xva/tar.js'
import { xxh64Hex } from '../../xva/xxhash64.js'
import type { DiskContent, PatternPool } from './disk-content.js'
import type { ExportContext } from './export.js'
import { NULL_REF, XapiFailure, text } from './store.js'
import { beginRequest, sendXapiError } from './http-request.js'

export const XVA_CHUNK_BYTES = 1024 * 1024


/** Every exported object with its archive id, and the VDIs with theirs. */
function collect(ctx: ExportContext, vmRef: string): { objects: OvaObject[]; vdis: { id: string; ref: string }[] } {
  const s = ctx.pool.store
  const ids = new Map<string, string>()
  const order: { cls: string; ref: string }[] = []
  const add = (cls: string, ref: string): void => {
    if (ids.has(ref) || !s.has(cls, ref)) return
    ids.set(ref, `Ref:${ids.size}`)
    order.push({ cls, ref })
  }
  const vm = s.get('VM', vmRef)
  add('VM', vmRef)
  for (const vbd of vm.VBDs as string[]) {
    add('VBD', vbd)
    const vdi = text(s.get('VBD', vbd).VDI)
    if (vdi !== NULL_REF && s.has('VDI', vdi)) {
      add('VDI', vdi)
      add('SR', text(s.get('VDI', vdi).SR))
    }
  }
  for (const vif of vm.VIFs as string[]) {
    add('VIF', vif)
    add('network', text(s.get('VIF', vif).network))
  }
  const rewrite = (v: unknown): XmlRpcValue => {
    if (typeof v === 'string') return v.startsWith('OpaqueRef:') ? (ids.get(v) ?? NULL_REF) : v
    if (Array.isArray(v)) return v.map(rewrite)
    if (typeof v === 'object' && v !== null) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, rewrite(x)]))
    return v as XmlRpcValue
  }
  const objects = order.map(({ cls, ref }) => ({ class: cls, id: ids.get(ref)!, snapshot: rewrite(s.get(cls, ref)) as Record<string, XmlRpcValue> }))
  const vdis = order.filter((o) => o.cls === 'VDI').map((o) => ({ id: ids.get(o.ref)!, ref: o.ref }))
  // XAPI streams the disks sorted on their archive id as strings
  vdis.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  return { objects, vdis }
}

/** xxhash of the second half of a pattern block, which every block of that pattern shares */
const tailHashes = new WeakMap<ArrayBufferLike, Map<number, string>>()

function chunkOf(disk: DiskContent, patterns: PatternPool, chunk: number): { data: Buffer; hash?: string } | undefined {
  const block = chunk >> 1
  const g = disk.generations.get(block)
  if (g === undefined) return undefined
  const parts = disk.blockParts(patterns, block, g)
  const whole = parts.length === 1 ? parts[0]! : undefined
  if (whole !== undefined) return { data: whole.subarray((chunk & 1) * XVA_CHUNK_BYTES, ((chunk & 1) + 1) * XVA_CHUNK_BYTES) }
  const [stamp, tail] = parts as [Buffer, Buffer]
  if ((chunk & 1) === 0) return { data: Buffer.concat([stamp, tail.subarray(0, XVA_CHUNK_BYTES - stamp.length)]) }
  const data = tail.subarray(XVA_CHUNK_BYTES - stamp.length)
  let cache = tailHashes.get(data.buffer)
  if (cache === undefined) tailHashes.set(data.buffer, (cache = new Map<number, string>()))
  let hash = cache.get(data.byteOffset)
  if (hash === undefined) cache.set(data.byteOffset, (hash = xxh64Hex(data)))
  return { data, hash }
}

function* xvaBytes(ctx: ExportContext, vmRef: string, onProgress: (done: number, total: number) => void): Generator<Buffer> {
  const { objects, vdis } = collect(ctx, vmRef)
  const xml = Buffer.from(ovaXml({
    version: { hostname: 'xapi-sim', date: new Date().toISOString().slice(0, 10), product_version: '8.3.0', product_brand: 'XCP-ng', build_number: 'sim', xapi_major: 25, xapi_minor: 0, export_vsn: 2 },
    objects,
  }))
  const mtime = Math.floor(Date.now() / 1000)
  yield Buffer.concat([tarHeader('ova.xml', xml.length, mtime), xml, tarPadding(xml.length)])
  const zero = Buffer.alloc(XVA_CHUNK_BYTES)
  const total = vdis.reduce((n, v) => n + (ctx.pool.disks.get(v.ref)?.virtualSizeBytes ?? 0), 0)
  let done = 0
  for (const { id, ref } of vdis) {
    const disk = ctx.pool.disks.get(ref)
    if (disk === undefined) throw new XapiFailure('VDI_MISSING', [ref])
    const chunks = Math.ceil(disk.virtualSizeBytes / XVA_CHUNK_BYTES)
    for (let c = 0; c < chunks; c++) {
      done += XVA_CHUNK_BYTES
      const found = chunkOf(disk, ctx.patterns, c)
      if (found === undefined && c !== 0 && c !== chunks - 1) continue
      const data = found?.data ?? zero
      const name = `${id}/${String(c).padStart(8, '0')}`
      const hash = found?.hash ?? xxh64Hex(data)
      yield tarHeader(name, data.length, mtime)
      yield data
      yield Buffer.concat([tarHeader(`${name}.xxhash`, hash.length, mtime), Buffer.from(hash, 'latin1'), tarPadding(hash.length)])
      if ((c & 63) === 63) onProgress(done, total)
    }
  }
  yield TAR_END
}

/** Handles one XVA export request; never throws (errors become HTTP errors and a failed task). */
export async function handleXvaExport(ctx: ExportContext, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const request = beginRequest(ctx, res, url)
  if (request === undefined) return
  const { q, taskRef, fail } = request
  let vmRef: string
  let compression: 'gzip' | 'zstd' | undefined
  try {
    const id = q.get('ref') ?? q.get('uuid') ?? ''
    vmRef = ctx.pool.store.has('VM', id) ? id : ctx.pool.store.refByUuid('VM', id)
    const c = q.get('use_compression') ?? 'false'
    if (c !== 'true' && c !== 'false' && c !== 'zstd') throw new XapiFailure('INVALID_VALUE', ['use_compression', c])
    compression = c === 'true' ? 'gzip' : c === 'zstd' ? 'zstd' : undefined
  } catch (error) {
    const f = error instanceof XapiFailure ? error : new XapiFailure('INTERNAL_ERROR', [String(error)])
    return fail(f.xapiCode === 'UUID_INVALID' ? 404 : 400, f.xapiCode, f.params)
  }
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
  res.writeHead(200, { 'Content-Type': 'application/octet-stream' })
  const progress = (done: number, total: number): void => {
    if (taskRef !== undefined) ctx.tasks.progress(taskRef, done / Math.max(1, total))
  }
  try {
    const body = Readable.from(xvaBytes(ctx, vmRef, progress), { objectMode: false, highWaterMark: 4 * XVA_CHUNK_BYTES })
    if (compression === undefined) await pipeline(body, res, { signal })
    else await pipeline(body, compressStream(compression), res, { signal })
    if (taskRef !== undefined) ctx.tasks.succeed(taskRef, '')
  } catch (error) {
    const reason = signal.reason as unknown
    if (reason instanceof XapiFailure) fail(500, reason.xapiCode, reason.params)
    else if (taskRef !== undefined) ctx.tasks.fail(taskRef, 'VDI_IO_ERROR', [error instanceof Error ? error.message : String(error)])
    if (!res.destroyed) res.destroy()
  }
}

/**
 * Where a disk export's VHD comes from, in the stream thread: XAPI's HTTP export (as before), or NBD
 * when the main thread planned it (`DiskExportInput.nbd`, nbd-plan.ts), as XO reads disks:
 *
 * - a full over NBD: the HTTP export is opened only for its head (footer, header, BAT: which blocks hold
 *   data) and closed; the blocks are then read over `nbdConcurrency` NBD connections. The VHD written is
 *   the one the HTTP path writes (same head, same blocks, full sector bitmaps as XAPI sends them);
 * - a CBT delta: the blocks are those `VDI.list_changed_blocks` marked (a 2 MiB block is read when any
 *   of its 32 bits of 64 KiB is set), read over NBD into a differencing VHD; no HTTP at all, so it works
 *   against a base whose data was destroyed.
 *
 * NBD unusable when the disk starts (no server, unreachable, TLS mismatch, export refused): the HTTP
 * export is used instead and a warning says why; for a CBT delta whose base has no data any more, that
 * fallback is a full. A failure once blocks flow (a reset beyond the retries) fails the disk (E_NBD_READ):
 * never a short disk. Blocks are read ahead (2 per connection, at least 8) into pooled block buffers.
 */
import { BackupProxyError, CancelledError } from '../common/errors.js'
import { bitmapSizeBytes, DEFAULT_BLOCK_SIZE, DISK_TYPES } from '../vhd/constants.js'
import { createFooter, vhdTimestamp } from '../vhd/footer.js'
import { createHeader } from '../vhd/header.js'
import type { VhdBlockPool } from '../vhd/block-pool.js'
import type { VhdChunkPlan } from '../vhd/chunk-plan.js'
import { openVhdStream, type VhdBlock, type VhdStream } from '../vhd/stream-parser.js'
import { openVdiExport, type VdiExportDescriptor } from '../xapi/export.js'
import type { NbdServerInfo } from '../xapi/nbd/client.js'
import { NbdDisk } from '../xapi/nbd/multi.js'
import { chunksOf } from './chunks.js'

/** Plain data: how the thread reads a disk over NBD (built by nbd-plan.ts on the main thread). */
export interface NbdExportPlan {
  servers: NbdServerInfo[]
  concurrency: number
  virtualSizeBytes: number
  /** CBT delta: base64 `VDI.list_changed_blocks(base, vdi)`; absent: a full (blocks from the HTTP export's BAT) */
  changedBlocks?: string
  /** footer timestamp of a CBT delta (the snapshot's time), Unix ms */
  timestampMs: number
  /** when NBD is unusable: the same export over HTTP, or a full over HTTP (the base's data was destroyed) */
  fallback: 'http' | 'http-full'
}

/** The part of a parsed VHD stream the export uses. */
type DiskVhd = Pick<VhdStream, 'footer' | 'header' | 'blockOrder' | 'blocks' | 'bytesRead' | 'close'>

interface DiskSource {
  vhd: DiskVhd
  sizeBytes?: number
  transport: 'nbd' | 'http'
  /** NBD connections used */
  connections: number
  warnings: string[]
  /** the delta asked became a full (HTTP fallback of a CBT delta whose base has no data) */
  becameFull: boolean
}

interface OpenDiskSourceOptions {
  descriptor: VdiExportDescriptor
  nbd: NbdExportPlan | undefined
  signal: AbortSignal
  pool: VhdBlockPool
  plan: VhdChunkPlan
  maxRateBytesPerSecond: number
  readAheadChunks: number
  /** no byte for this long fails the export (default 5 minutes) */
  inactivityTimeoutMs?: number
}

const CBT_BLOCK_BYTES = 64 * 1024
const NBD_UNUSABLE = new Set(['E_NBD_UNREACHABLE', 'E_NBD_TLS', 'E_NBD_NEGOTIATION'])

/** Indexes of the 2 MiB blocks a CBT bitmap marks; E_CBT when its length is not the disk's. */
export function changedBlockIndexes(base64: string, virtualSizeBytes: number): number[] {
  const bitmap = Buffer.from(base64, 'base64')
  const expected = Math.ceil(virtualSizeBytes / CBT_BLOCK_BYTES / 8)
  if (bitmap.length !== expected) {
    throw new BackupProxyError('E_CBT', `VDI.list_changed_blocks answered ${bitmap.length} bytes for a ${virtualSizeBytes}-byte disk, expected ${expected}`, { fields: { got: bitmap.length, expected } })
  }
  const perBlock = DEFAULT_BLOCK_SIZE / CBT_BLOCK_BYTES / 8 // bytes of bitmap per 2 MiB block: 4
  const out: number[] = []
  const whole = Math.floor(bitmap.length / perBlock)
  // one 32-bit word per block (no view per block: a 2 TiB disk has a million of them)
  for (let b = 0; b < whole; b++) if (bitmap.readUInt32BE(b * perBlock) !== 0) out.push(b)
  // the last block of a disk that is not a whole number of 2 MiB blocks has fewer bytes
  for (let i = whole * perBlock; i < bitmap.length; i++) {
    if (bitmap[i] !== 0) {
      out.push(whole)
      break
    }
  }
  return out
}

async function openHttp(o: OpenDiskSourceOptions, descriptor: VdiExportDescriptor): Promise<{ vhd: VhdStream; sizeBytes?: number }> {
  const exp = await openVdiExport({
    ...descriptor,
    signal: o.signal,
    chunkBuffer: (offset) => o.plan.bufferFor(offset),
    ...(o.maxRateBytesPerSecond > 0 ? { maxRateBytesPerSecond: o.maxRateBytesPerSecond } : {}),
    ...(o.inactivityTimeoutMs === undefined ? {} : { inactivityTimeoutMs: o.inactivityTimeoutMs }),
  })
  const vhd = await openVhdStream(chunksOf(exp.stream, o.readAheadChunks), { signal: o.signal, blockPool: o.pool, chunkPlan: o.plan })
  return exp.sizeBytes === undefined ? { vhd } : { vhd, sizeBytes: exp.sizeBytes }
}

/**
 * Reads in flight for a disk read over `connections` NBD connections: 2 per connection, at least 8. Each
 * holds a 2 MiB block buffer, and the thread's block pool keeps 8 free buffers between disks: a wider
 * window allocates fresh buffers at every export, and the first write into each faults its pages in.
 * With 32 in flight (the former 8 per connection, 4 connections) a 5 % CBT delta of a 1 GiB disk (26
 * blocks) cost this process a median 120 ms of CPU, with this window 71 ms (20 deltas each, alternated).
 * 2 per connection still covers a request's round trip (a 2 MiB reply takes longer than a LAN round
 * trip); XO reads 16 ahead over all its connections.
 */
function readWindow(connections: number): number {
  return Math.max(8, 2 * connections)
}

/** Blocks of `order` read over NBD, `window` in flight, each in a pooled buffer with a full bitmap. */
function nbdVhd(disk: NbdDisk, head: Pick<VhdStream, 'footer' | 'header' | 'blockOrder'>, pool: VhdBlockPool, headBytes: number): DiskVhd {
  const blockSize = head.header.blockSizeBytes
  const bitmapBytes = bitmapSizeBytes(blockSize)
  const size = head.footer.currentSizeBytes
  let bytesRead = headBytes
  const window = readWindow(disk.connections)
  const start = (index: number): Promise<VhdBlock> => {
    const buffer = pool.acquire(bitmapBytes + blockSize)
    buffer.fill(0xff, 0, bitmapBytes)
    const data = buffer.subarray(bitmapBytes)
    const offset = index * blockSize
    const length = Math.min(blockSize, size - offset)
    if (length < blockSize) data.fill(0, length)
    const p = disk.read(offset, data.subarray(0, length)).then(() => {
      bytesRead += length
      return { index, bitmap: buffer.subarray(0, bitmapBytes), data, buffer }
    })
    p.catch(() => undefined) // awaited in order below
    return p
  }
  return {
    ...head,
    get bytesRead() {
      return bytesRead
    },
    async *blocks() {
      const inflight: Promise<VhdBlock>[] = []
      let next = 0
      while (next < head.blockOrder.length || inflight.length > 0) {
        while (inflight.length < window && next < head.blockOrder.length) inflight.push(start(head.blockOrder[next++]!))
        yield await inflight.shift()!
      }
    },
    close: () => disk.close(),
  }
}

async function openNbd(o: OpenDiskSourceOptions, plan: NbdExportPlan): Promise<DiskSource> {
  const disk = await NbdDisk.open(plan.servers, { concurrency: plan.concurrency, signal: o.signal, ...(o.inactivityTimeoutMs === undefined ? {} : { inactivityTimeoutMs: o.inactivityTimeoutMs }) })
  try {
    if (disk.sizeBytes !== plan.virtualSizeBytes) {
      throw new BackupProxyError('E_NBD_NEGOTIATION', `the NBD export is ${disk.sizeBytes} bytes, the VDI ${plan.virtualSizeBytes}`)
    }
    let head: Pick<VhdStream, 'footer' | 'header' | 'blockOrder'>
    let headBytes = 0
    if (plan.changedBlocks !== undefined) {
      const footer = createFooter({ currentSizeBytes: plan.virtualSizeBytes, diskType: DISK_TYPES.DIFFERENCING, timestamp: vhdTimestamp(new Date(plan.timestampMs)) })
      head = { footer, header: createHeader({ currentSizeBytes: plan.virtualSizeBytes }), blockOrder: Uint32Array.from(changedBlockIndexes(plan.changedBlocks, plan.virtualSizeBytes)) }
    } else {
      // XO's way: the HTTP export says which blocks hold data, NBD carries them
      const http = await openHttp(o, o.descriptor)
      head = { footer: http.vhd.footer, header: http.vhd.header, blockOrder: http.vhd.blockOrder }
      headBytes = http.vhd.bytesRead
      await http.vhd.close()
    }
    return { vhd: nbdVhd(disk, head, o.pool, headBytes), transport: 'nbd', connections: disk.connections, warnings: [...disk.warnings], becameFull: false }
  } catch (error) {
    await disk.close()
    throw error
  }
}

/** Opens the disk's VHD source: NBD as planned, else (or when NBD is unusable) the HTTP export. */
export async function openDiskSource(o: OpenDiskSourceOptions): Promise<DiskSource> {
  const plan = o.nbd
  const warnings: string[] = []
  if (plan !== undefined) {
    try {
      return await openNbd(o, plan)
    } catch (error) {
      if (error instanceof CancelledError || o.signal.aborted) throw error
      const code = (error as { code?: unknown }).code
      if (!(error instanceof BackupProxyError) || !(NBD_UNUSABLE.has(String(code)) || code === 'E_CBT')) throw error
      warnings.push(`can't read through NBD (${error.code}: ${error.message}), fall back to the HTTP export${plan.fallback === 'http-full' ? ' as a full (the base snapshot has no data left for a delta)' : ''}`)
    }
  }
  const full = plan?.fallback === 'http-full'
  const { baseRef: _base, ...withoutBase } = o.descriptor
  const http = await openHttp(o, full ? withoutBase : o.descriptor)
  return { vhd: http.vhd, ...(http.sizeBytes === undefined ? {} : { sizeBytes: http.sizeBytes }), transport: 'http', connections: 0, warnings, becameFull: full }
}

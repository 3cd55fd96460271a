/**
 * A chain of VHDs on a remote: a child, its parent, … down to a dynamic VHD (XO's delta backups).
 *
 *   const chain = await openChain(remote, 'vdis/job/vdi/20260102T000000Z.alias.vhd')
 *   await chain.readBlock(7)                  // the block as the chain sees it (child wins)
 *   await chain.readRange(startByte, length)  // any virtual range
 *   chain.rawStream()                         // whole disk as raw bytes (absent blocks are zeros)
 *   chain.vhdStream()                         // one flattened dynamic VHD (for restore)
 *   await checkChain(remote, path)            // parent UUIDs, timestamps, missing parents
 *
 * A child's present block replaces the parent's block sector by sector according to its bitmap (XAPI
 * and XO write full bitmaps, so in practice the whole block: then no parent read happens).
 */
import { Readable } from 'node:stream'
import { errorCode } from '../common/errors.js'
import type { Remote } from '../remotes/remote.js'
import type { VhdBlockPool } from './block-pool.js'
import { encodeBat } from './bat.js'
import { BLOCK_UNUSED, DISK_TYPES, FOOTER_SIZE, HEADER_SIZE, SECTOR_SIZE, batSizeBytes, bitmapSizeBytes, blockCount } from './constants.js'
import { corrupt, unsupported } from './corrupt.js'
import { bitmapIsFull, fullBitmap, sectorIsSet } from './bitmap.js'
import { encodeFooter, type VhdFooter } from './footer.js'
import { createHeader, encodeHeader, type VhdHeader } from './header.js'
import { openVhd, parentPathOf, type VhdReader } from './open.js'
import type { VhdBlock } from './stream-parser.js'
import { NULL_UUID } from './uuid.js'

const MAX_CHAIN_LENGTH = 1000
/** Blocks a flattened stream reads ahead of its consumer (restore: overlaps remote reads and brotli with the upload). */
const READ_AHEAD_BLOCKS = 4

export class VhdChain {
  /** child first, root (dynamic) last */
  readonly vhds: readonly VhdReader[]
  readonly blockSizeBytes: number
  readonly virtualSizeBytes: number
  readonly #bitmapSize: number

  constructor(vhds: readonly VhdReader[]) {
    const top = vhds[0]
    if (top === undefined) throw new RangeError('a chain needs at least one VHD')
    this.vhds = vhds
    this.blockSizeBytes = top.header.blockSizeBytes
    for (const v of vhds) {
      if (v.header.blockSizeBytes !== this.blockSizeBytes) throw unsupported(`${v.path} has ${v.header.blockSizeBytes}-byte blocks, its child ${top.path} ${this.blockSizeBytes}: mixed block sizes in one chain`)
    }
    this.virtualSizeBytes = top.footer.currentSizeBytes
    this.#bitmapSize = bitmapSizeBytes(this.blockSizeBytes)
  }

  get top(): VhdReader {
    return this.vhds[0] as VhdReader
  }

  get blockCount(): number {
    return blockCount(this.virtualSizeBytes, this.blockSizeBytes)
  }

  hasBlock(index: number): boolean {
    return this.vhds.some((v) => v.hasBlock(index))
  }

  /** present block indexes of the whole chain, ascending */
  blockIndexes(): number[] {
    const n = this.blockCount
    const out: number[] = []
    for (let i = 0; i < n; i++) if (this.hasBlock(i)) out.push(i)
    return out
  }

  /**
   * The block as the chain sees it, or undefined when no VHD of the chain has it. `into`: as
   * VhdReader.readBlock (used by the newest layer holding the block; its buffer is `into` or not).
   */
  async readBlock(index: number, signal?: AbortSignal, into?: Buffer): Promise<VhdBlock | undefined> {
    const layers: VhdBlock[] = []
    for (const v of this.vhds) {
      if (!v.hasBlock(index)) continue
      const block = await v.readBlock(index, signal, layers.length === 0 ? into : undefined)
      layers.push(block)
      if (bitmapIsFull(block.bitmap, this.blockSizeBytes)) break
    }
    const first = layers[0]
    if (first === undefined) return undefined
    if (layers.length === 1 && bitmapIsFull(first.bitmap, this.blockSizeBytes)) return first
    // compose sector by sector, from the oldest layer up
    const buffer = Buffer.alloc(this.#bitmapSize + this.blockSizeBytes)
    fullBitmap(this.blockSizeBytes).copy(buffer)
    const sectors = this.blockSizeBytes / SECTOR_SIZE
    for (let l = layers.length - 1; l >= 0; l--) {
      const layer = layers[l] as VhdBlock
      for (let s = 0; s < sectors; s++) {
        if (sectorIsSet(layer.bitmap, s)) layer.data.copy(buffer, this.#bitmapSize + s * SECTOR_SIZE, s * SECTOR_SIZE, (s + 1) * SECTOR_SIZE)
      }
    }
    return { index, bitmap: buffer.subarray(0, this.#bitmapSize), data: buffer.subarray(this.#bitmapSize), buffer }
  }

  /** Holds every VHD of the chain open for reads (VhdReader.hold) until `release()`. */
  async hold(signal?: AbortSignal): Promise<void> {
    const held = await Promise.allSettled(this.vhds.map((v) => v.hold(signal)))
    const failed = held.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed === undefined) return
    await Promise.all(this.vhds.filter((_, i) => held[i]?.status === 'fulfilled').map((v) => v.release()))
    throw failed.reason
  }

  async release(): Promise<void> {
    await Promise.all(this.vhds.map((v) => v.release()))
  }

  /** Bytes [start, start+length) of the virtual disk. */
  async readRange(start: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    if (start < 0 || length < 0 || start + length > this.virtualSizeBytes) throw new RangeError(`range ${start}+${length} is outside the ${this.virtualSizeBytes}-byte disk`)
    const out = Buffer.alloc(length)
    let at = start
    while (at < start + length) {
      const index = Math.floor(at / this.blockSizeBytes)
      const inBlock = at - index * this.blockSizeBytes
      const n = Math.min(this.blockSizeBytes - inBlock, start + length - at)
      const block = await this.readBlock(index, signal)
      block?.data.copy(out, at - start, inBlock, inBlock + n)
      at += n
    }
    return out
  }

  /** The whole disk as raw bytes, block by block (one block in memory). */
  rawStream(options: { signal?: AbortSignal } = {}): Readable {
    const zeros = Buffer.alloc(this.blockSizeBytes)
    const generate = async function* (chain: VhdChain): AsyncGenerator<Buffer> {
      const n = chain.blockCount
      await chain.hold(options.signal)
      try {
        for (let i = 0; i < n; i++) {
          options.signal?.throwIfAborted()
          const size = Math.min(chain.blockSizeBytes, chain.virtualSizeBytes - i * chain.blockSizeBytes)
          const block = await chain.readBlock(i, options.signal)
          const data = block?.data ?? zeros
          yield size === data.length ? data : data.subarray(0, size)
        }
      } finally {
        await chain.release()
      }
    }
    return Readable.from(generate(this), { objectMode: false, highWaterMark: 2 })
  }

  /** Footer and header of the flattened (dynamic) VHD the chain stands for. */
  flattenedHead(): { footer: VhdFooter; header: VhdHeader } {
    const top = this.top
    const footer: VhdFooter = { ...top.footer, geometry: { ...top.footer.geometry }, dataOffset: FOOTER_SIZE, diskType: DISK_TYPES.DYNAMIC }
    const header = createHeader({ currentSizeBytes: this.virtualSizeBytes, blockSizeBytes: this.blockSizeBytes })
    header.maxTableEntries = Math.max(header.maxTableEntries, top.header.maxTableEntries)
    return { footer, header }
  }

  /**
   * One dynamic VHD with every block of the chain (for restore): footer, header, BAT, blocks, footer.
   * Blocks are read ahead (READ_AHEAD_BLOCKS in flight), so at most that many blocks are held. With a
   * `pool`, blocks are read into its buffers where the reader can (VhdFile, sparse brotli), and the
   * consumer hands each yielded chunk back with `pool.done(chunk)` once it no longer uses it (chunks
   * not from the pool are ignored there): no fresh 2 MiB buffer, and its page faults, per block.
   */
  vhdStream(options: { signal?: AbortSignal; pool?: VhdBlockPool } = {}): Readable {
    const { footer, header } = this.flattenedHead()
    const present = this.blockIndexes()
    const full = this.#bitmapSize + this.blockSizeBytes
    const dataStart = FOOTER_SIZE + HEADER_SIZE + batSizeBytes(header.maxTableEntries)
    const bat = new Uint32Array(header.maxTableEntries).fill(BLOCK_UNUSED)
    present.forEach((index, i) => {
      bat[index] = (dataStart + i * full) / SECTOR_SIZE
    })
    const generate = async function* (chain: VhdChain): AsyncGenerator<Buffer> {
      const footerBuf = encodeFooter(footer)
      yield footerBuf
      yield encodeHeader(header)
      yield encodeBat(bat)
      // up to READ_AHEAD_BLOCKS reads in flight, yielded in order: remote latency and decompression
      // (zlib runs on libuv's threads) overlap the consumer (each read returns a fresh buffer)
      const pending: Promise<VhdBlock | undefined>[] = []
      let next = 0
      const { pool } = options
      const readBlock = async (index: number): Promise<VhdBlock | undefined> => {
        const into = pool?.acquire(full)
        const block = await chain.readBlock(index, options.signal, into)
        // the yielded buffer goes back to the pool once the consumer calls pool.done(buffer); an unused one now
        if (into !== undefined) pool?.share(into, block?.buffer === into ? 1 : 0)
        return block
      }
      const fill = (): void => {
        while (pending.length < READ_AHEAD_BLOCKS && next < present.length) {
          const read = readBlock(present[next++]!)
          read.catch(() => undefined) // awaited in order below; one failing early is not unhandled
          pending.push(read)
        }
      }
      // the chain's VhdFiles stay open for the stream (one open per file, not per block), closed once it
      // ends, fails or is destroyed, after the reads still in flight
      await chain.hold(options.signal)
      try {
        for (const index of present) {
          options.signal?.throwIfAborted()
          fill()
          const block = await pending.shift()!
          if (block === undefined) throw new Error(`block ${index} vanished while streaming the chain`)
          yield block.buffer
        }
      } finally {
        await Promise.allSettled(pending)
        await chain.release()
      }
      yield footerBuf
    }
    return Readable.from(generate(this), { objectMode: false, highWaterMark: 2 })
  }
}

/** Opens a VHD and all its parents (child first). Missing parents and UUID mismatches are VhdCorruptError. */
export async function openChain(remote: Remote, path: string, options: { signal?: AbortSignal } = {}): Promise<VhdChain> {
  const vhds: VhdReader[] = [await openVhd(remote, path, options)]
  for (;;) {
    const child = vhds[vhds.length - 1] as VhdReader
    if (child.footer.diskType !== DISK_TYPES.DIFFERENCING) break
    if (vhds.length >= MAX_CHAIN_LENGTH) throw corrupt('chain', 'parentUnicodeName', FOOTER_SIZE + 64, `${path}: chain longer than ${MAX_CHAIN_LENGTH} (a loop?)`)
    const parentPath = parentPathOf(child)
    let parent: VhdReader
    try {
      parent = await openVhd(remote, parentPath, options)
    } catch (error) {
      if (errorCode(error) === 'ENOENT') throw corrupt('chain', 'parentUnicodeName', FOOTER_SIZE + 64, `${child.path}: its parent ${parentPath} is missing`, error)
      throw error
    }
    if (child.header.parentUuid !== parent.footer.uuid) {
      throw corrupt('chain', 'parentUuid', FOOTER_SIZE + 40, `${child.path} expects parent ${child.header.parentUuid} but ${parentPath} is ${parent.footer.uuid}`)
    }
    if (vhds.some((v) => v.footer.uuid === parent.footer.uuid)) throw corrupt('chain', 'parentUuid', FOOTER_SIZE + 40, `${path}: the chain loops through ${parentPath}`)
    vhds.push(parent)
  }
  return new VhdChain(vhds)
}

interface ChainReport {
  /** paths, child first */
  paths: string[]
  /** consistent but worth knowing (e.g. parent timestamp differs: XO's chaining does not update it) */
  warnings: string[]
}

/**
 * Checks a chain: every parent present and openable (all its structures valid), parent UUIDs match,
 * block sizes agree, the root is dynamic. Throws VhdCorruptError on the first inconsistency.
 */
export async function checkChain(remote: Remote, path: string, options: { signal?: AbortSignal } = {}): Promise<ChainReport> {
  const chain = await openChain(remote, path, options)
  const warnings: string[] = []
  chain.vhds.forEach((v, i) => {
    const parent = chain.vhds[i + 1]
    if (parent === undefined) return
    if (v.header.parentTimestamp !== parent.footer.timestamp) {
      warnings.push(`${v.path}: parent timestamp ${v.header.parentTimestamp} differs from ${parent.path}'s ${parent.footer.timestamp}`)
    }
    if (parent.footer.currentSizeBytes !== v.footer.currentSizeBytes) warnings.push(`${v.path}: virtual size ${v.footer.currentSizeBytes} differs from its parent's ${parent.footer.currentSizeBytes} (disk resized)`)
  })
  const root = chain.vhds[chain.vhds.length - 1] as VhdReader
  if (root.header.parentUuid !== NULL_UUID && root.footer.diskType === DISK_TYPES.DYNAMIC) warnings.push(`${root.path}: dynamic root keeps a parent UUID (ignored)`)
  return { paths: chain.vhds.map((v) => v.path), warnings }
}

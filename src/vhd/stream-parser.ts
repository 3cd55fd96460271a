/**
 * Streaming parser and validator of a dynamic/differencing VHD as XAPI exports it
 * (`export_raw_vdi?format=vhd`): footer, header, BAT (and parent locator data) first, then the blocks in
 * BAT offset order, then a copy of the footer.
 *
 *   const vhd = await openVhdStream(readable, { signal })
 *   vhd.footer; vhd.header; vhd.bat            // parsed and validated before the first block
 *   for await (const block of vhd.blocks()) … // { index, bitmap, data, buffer }
 *
 * Memory is bounded by one block (bitmap + data) plus one source chunk: each block is copied at most
 * once (into its own buffer — from `blockPool` when given — or not at all when a source chunk holds it
 * whole, which `chunkPlan` arranges with a transport that reads into planned buffers). Everything is validated
 * as it goes: cookies and checksums, BAT entries inside the disk and not overlapping, every region in
 * increasing offset order (the only order a stream can be read in), a truncated stream, and the
 * trailing footer byte-equal to the head one. `blocks()` finishes only once the trailing footer has
 * been checked, so a consumer that publishes after the loop never publishes a bad stream.
 */
import { CancelledError } from '../common/errors.js'
import { planLayout, decodeBat, type LayoutItem, type VhdLayout } from './bat.js'
import type { VhdBlockPool } from './block-pool.js'
import { ByteReader, type ByteSource } from './byte-reader.js'
import type { VhdChunkPlan } from './chunk-plan.js'
import { DISK_TYPES, FOOTER_SIZE, HEADER_SIZE, bitmapSizeBytes } from './constants.js'
import { corrupt, unsupported } from './corrupt.js'
import { decodeFooter, type VhdFooter } from './footer.js'
import { decodeHeader, type VhdHeader } from './header.js'

export interface VhdBlock {
  /** block index in the BAT (virtual offset = index × block size) */
  index: number
  /** sector bitmap (512 bytes for 2 MiB blocks), a view of `buffer` */
  bitmap: Buffer
  /** block data (block size bytes), a view of `buffer` */
  data: Buffer
  /** bitmap followed by data, as stored in a VhdFile (what sinks write) */
  buffer: Buffer
}

interface ParentLocatorData {
  index: number
  platformCode: number
  data: Buffer
}

interface OpenVhdStreamOptions {
  signal?: AbortSignal
  /**
   * Block buffers are taken from this pool when a block must be gathered from several source chunks;
   * the caller returns them (VhdBlockPool.share/done) once every writer is done with a block.
   */
  blockPool?: VhdBlockPool
  /**
   * The source's chunk plan (see chunk-plan.ts): told the blocks' offsets once the BAT is read, so a
   * transport that reads into planned buffers yields each block as one chunk (used without a copy).
   */
  chunkPlan?: VhdChunkPlan
}

export interface VhdStream {
  readonly footer: VhdFooter
  /** the footer's 512 raw bytes as received */
  readonly footerBuffer: Buffer
  readonly header: VhdHeader
  /** BAT as received: sector offsets in the source stream, 0xFFFFFFFF = absent */
  readonly bat: Uint32Array
  /** indexes of present blocks in the order `blocks()` yields them */
  readonly blockOrder: Uint32Array
  /** parent locator data read so far (those placed before the first block are read by open) */
  readonly parentLocators: readonly ParentLocatorData[]
  /** bytes consumed from the source so far */
  readonly bytesRead: number
  /** yields every present block, then checks the trailing footer; can be iterated once */
  blocks(): AsyncGenerator<VhdBlock, void, undefined>
  /** stops reading and releases the source (a Readable is destroyed) */
  close(): Promise<void>
}

/** The next region of the stream: a block (by its position in the layout) or a locator. */
type NextRegion = { block: number } | { item: LayoutItem } | undefined

class StreamParser implements VhdStream {
  readonly parentLocators: ParentLocatorData[] = []
  readonly blockOrder: Uint32Array
  /** what remains to read: blocks from #nextBlock, locators from #nextOther (no object per block) */
  readonly #layout: VhdLayout
  #nextBlock = 0
  #nextOther = 0
  #started = false
  readonly #bitmapSize: number

  constructor(
    readonly footer: VhdFooter,
    readonly footerBuffer: Buffer,
    readonly header: VhdHeader,
    readonly bat: Uint32Array,
    layout: VhdLayout,
    readonly reader: ByteReader,
    readonly signal: AbortSignal | undefined,
    readonly dispose: () => void,
    readonly blockPool: VhdBlockPool | undefined,
  ) {
    this.#layout = layout
    this.blockOrder = layout.blockIndexes
    this.#bitmapSize = bitmapSizeBytes(header.blockSizeBytes)
  }

  get bytesRead(): number {
    return this.reader.position
  }

  #peek(): NextRegion {
    const { others, blockOffsets } = this.#layout
    const other = others[this.#nextOther]
    if (this.#nextBlock < blockOffsets.length && (other === undefined || (blockOffsets[this.#nextBlock] as number) < other.offset)) return { block: this.#nextBlock }
    return other === undefined ? undefined : { item: other }
  }

  /** Reads the non-block items (locators) that precede the first block. */
  async readLeadingItems(): Promise<void> {
    for (let next = this.#peek(); next !== undefined && 'item' in next; next = this.#peek()) {
      await this.#readLocator(next.item)
      this.#nextOther++
    }
  }

  async #skipTo(offset: number, structure: 'block' | 'locator', field: string): Promise<void> {
    if (offset < this.reader.position) {
      throw corrupt(structure === 'block' ? 'bat' : 'locator', field, offset, `region at byte ${offset} comes before the current stream position ${this.reader.position}`)
    }
    // a region past the end shows up while skipping to it: name the region, not the padding
    await this.reader.skip(offset - this.reader.position, structure, structure === 'block' ? field.replace('entry', 'block') : `${field}.data`)
  }

  async #readLocator(item: LayoutItem): Promise<void> {
    await this.#skipTo(item.offset, 'locator', `parentLocators[${item.index}]`)
    if (item.kind === 'bat') {
      await this.reader.skip(item.sizeBytes, 'bat', 'entries')
      return
    }
    const data = Buffer.from(await this.reader.read(item.sizeBytes, 'locator', `parentLocators[${item.index}].data`))
    this.parentLocators.push({ index: item.index, platformCode: this.header.parentLocators[item.index]?.platformCode ?? 0, data })
  }

  async #readBlock(n: number): Promise<VhdBlock> {
    const index = this.#layout.blockIndexes[n] as number
    await this.#skipTo(this.#layout.blockOffsets[n] as number, 'block', `entry[${index}]`)
    const pool = this.blockPool
    const buffer = await this.reader.read(this.#layout.blockBytes, 'block', `block[${index}]`, pool === undefined ? undefined : (size) => pool.acquire(size))
    return { index, bitmap: buffer.subarray(0, this.#bitmapSize), data: buffer.subarray(this.#bitmapSize), buffer }
  }

  async *blocks(): AsyncGenerator<VhdBlock, void, undefined> {
    if (this.#started) throw new Error('VhdStream.blocks() can be iterated only once')
    this.#started = true
    try {
      for (let next = this.#peek(); next !== undefined; next = this.#peek()) {
        if (this.signal?.aborted === true) throw new CancelledError('the VHD stream was cancelled', { cause: this.signal.reason })
        if ('item' in next) {
          await this.#readLocator(next.item)
          this.#nextOther++
          continue
        }
        const block = await this.#readBlock(next.block)
        this.#nextBlock++
        yield block
      }
      const start = this.reader.position
      const { tail, bytesRead } = await this.reader.readTail(FOOTER_SIZE)
      if (tail.length < FOOTER_SIZE) throw corrupt('stream', 'footer', start, `the stream ended ${bytesRead} bytes after the last block, without the trailing footer (truncated export)`)
      if (!tail.equals(this.footerBuffer)) {
        const at = start + bytesRead - FOOTER_SIZE
        decodeFooter(tail, at) // a specific error (cookie, checksum) when the copy is damaged
        throw corrupt('footer', 'trailing', at, 'the trailing footer differs from the head footer')
      }
    } finally {
      this.dispose()
      await this.reader.close()
    }
  }

  async close(): Promise<void> {
    this.dispose()
    await this.reader.close()
  }
}

/**
 * Reads and validates the head of a VHD stream (footer, header, BAT, leading parent locators) and
 * returns a VhdStream positioned before the first block.
 */
export async function openVhdStream(source: ByteSource, options: OpenVhdStreamOptions = {}): Promise<VhdStream> {
  const { signal, blockPool, chunkPlan } = options
  signal?.throwIfAborted()
  const reader = new ByteReader(source)
  const onAbort = (): void => {
    const destroy = (source as { destroy?: (error?: Error) => void }).destroy
    if (typeof destroy === 'function') destroy.call(source, new CancelledError('the VHD stream was cancelled', { cause: signal?.reason }))
  }
  signal?.addEventListener('abort', onAbort, { once: true })
  const dispose = (): void => signal?.removeEventListener('abort', onAbort)
  try {
    const footerBuffer = Buffer.from(await reader.read(FOOTER_SIZE, 'footer', 'cookie'))
    const footer = decodeFooter(footerBuffer, 0, { allowFixed: true })
    if (footer.diskType === DISK_TYPES.FIXED || footer.dataOffset === null) throw unsupported('a fixed-size VHD cannot be read as a stream (expected a dynamic or differencing export)', { diskType: footer.diskType })
    await reader.skip(footer.dataOffset - FOOTER_SIZE, 'stream', 'padding')
    const header = decodeHeader(Buffer.from(await reader.read(HEADER_SIZE, 'header', 'cookie')), footer.dataOffset, footer)
    // locators may sit before the BAT: read whatever precedes it, then the BAT
    const pre: ParentLocatorData[] = []
    const leading = header.parentLocators
      .map((e, index) => ({ e, index }))
      .filter(({ e }) => e.platformCode !== 0 && e.platformDataLength > 0 && e.platformDataOffset < header.tableOffset)
      .sort((a, b) => a.e.platformDataOffset - b.e.platformDataOffset)
    for (const { e, index } of leading) {
      if (e.platformDataOffset < reader.position) throw corrupt('locator', `parentLocators[${index}].platformDataOffset`, footer.dataOffset + 576 + index * 24 + 16, `locator data at byte ${e.platformDataOffset} overlaps the header or another locator`)
      await reader.skip(e.platformDataOffset - reader.position, 'stream', 'padding')
      pre.push({ index, platformCode: e.platformCode, data: Buffer.from(await reader.read(e.platformDataLength, 'locator', `parentLocators[${index}].data`)) })
    }
    if (header.tableOffset < reader.position) throw corrupt('header', 'tableOffset', footer.dataOffset + 16, `BAT at byte ${header.tableOffset} overlaps a parent locator`)
    await reader.skip(header.tableOffset - reader.position, 'stream', 'padding')
    const bat = decodeBat(await reader.read(header.maxTableEntries * 4, 'bat', 'entries'), header.maxTableEntries, header.tableOffset)
    const planned = planLayout(footer, header, bat)
    const layout = { ...planned, others: planned.others.filter((i) => i.kind !== 'bat' && i.offset >= header.tableOffset) }
    chunkPlan?.setLayout(layout.blockOffsets, layout.blockBytes)
    const parser = new StreamParser(footer, footerBuffer, header, bat, layout, reader, signal, dispose, blockPool)
    parser.parentLocators.push(...pre)
    await parser.readLeadingItems()
    return parser
  } catch (error) {
    dispose()
    // the source is abandoned because of `error`, which is what the caller must see
    await reader.close().catch(() => undefined)
    if (signal?.aborted === true && !(error instanceof CancelledError)) throw new CancelledError('the VHD stream was cancelled', { cause: signal.reason })
    throw error
  }
}

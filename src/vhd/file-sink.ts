/**
 * VhdFile writer: a dynamic or differencing `.vhd` laid out as Xen Orchestra writes it, written
 * strictly sequentially through the remote's atomic write stream (so it works on S3 too):
 *
 *   footer @0 · header @512 · BAT @1536 · parent locator data (differencing) · blocks in stream order ·
 *   footer copy
 *
 * The BAT is known up front because the stream announces its present blocks before the first one
 * (`begin(…, blockOrder)`), so no seek-back is needed. A differencing file carries its parent's UUID,
 * timestamp, relative name (parentUnicodeName) and a W2KU parent locator with the same relative path.
 * Block buffers are written as they come (no copy). `end()` checks every announced block arrived, writes
 * the footer and publishes; `abort()` drops the temporary.
 */
import type { Remote } from '../remotes/remote.js'
import { encodeBat } from './bat.js'
import { BLOCK_UNUSED, DISK_TYPES, FOOTER_SIZE, HEADER_SIZE, PLATFORMS, SECTOR_SIZE, batSizeBytes, bitmapSizeBytes, blockCount } from './constants.js'
import { encodeFooter, type VhdFooter } from './footer.js'
import { emptyLocator, encodeHeader, type VhdHeader } from './header.js'
import type { VhdParentRef, VhdSink, VhdSinkResult } from './sink.js'
import type { VhdBlock } from './stream-parser.js'
import { WritableSink } from './writable.js'

interface VhdFileSinkOptions {
  /** chain the written file to this parent (makes it differencing) */
  parent?: VhdParentRef
  /** refuse to replace an existing file (EEXIST) */
  exclusive?: boolean
  signal?: AbortSignal
  /**
   * Called with each block once the remote's write stream has written its buffer (its write callback,
   * without error). Only meaningful for a remote whose writer holds no reference to a chunk after that
   * (the local remote); the caller may then reuse the block's buffer.
   */
  onBlockWritten?: (block: VhdBlock) => void
}

/** Footer and header of the output, from the source's, with the layout and parent fields rewritten. */
export function prepareOutputHead(footer: VhdFooter, header: VhdHeader, tableOffset: number, parent: VhdParentRef | undefined): { footer: VhdFooter; header: VhdHeader } {
  const outFooter: VhdFooter = { ...footer, geometry: { ...footer.geometry }, dataOffset: FOOTER_SIZE }
  const outHeader: VhdHeader = { ...header, tableOffset, parentLocators: header.parentLocators.map(() => emptyLocator()) }
  if (parent !== undefined) {
    outFooter.diskType = DISK_TYPES.DIFFERENCING
    outHeader.parentUuid = parent.uuid
    outHeader.parentTimestamp = parent.timestamp
    outHeader.parentUnicodeName = parent.relativePath
  }
  return { footer: outFooter, header: outHeader }
}

/** Checks a block order against the disk: indexes inside it, each once. */
export function checkBlockOrder(order: ArrayLike<number>, footer: VhdFooter, header: VhdHeader): void {
  const n = blockCount(footer.currentSizeBytes, header.blockSizeBytes)
  const seen = new Uint8Array(n) // a byte per block: a Set of a million numbers would cost tens of MiB
  for (let i = 0; i < order.length; i++) {
    const index = order[i] as number
    if (!Number.isInteger(index) || index < 0 || index >= n || index >= header.maxTableEntries) throw new RangeError(`block ${index} is outside the disk (${n} blocks)`)
    if (seen[index] === 1) throw new RangeError(`block ${index} is announced twice`)
    seen[index] = 1
  }
}

class VhdFileSink implements VhdSink {
  #out: WritableSink | undefined
  #order: ArrayLike<number> = []
  #next = 0
  #footerBuf: Buffer | undefined
  #fullBlockSize = 0
  #aborted = false

  constructor(
    readonly remote: Remote,
    readonly path: string,
    readonly options: VhdFileSinkOptions,
  ) {}

  async begin(footer: VhdFooter, header: VhdHeader, blockOrder: ArrayLike<number>): Promise<void> {
    if (this.#out !== undefined) throw new Error('VhdFileSink.begin() called twice')
    checkBlockOrder(blockOrder, footer, header)
    const tableOffset = FOOTER_SIZE + HEADER_SIZE
    const batBytes = batSizeBytes(header.maxTableEntries)
    const { footer: outFooter, header: outHeader } = prepareOutputHead(footer, header, tableOffset, this.options.parent)
    let dataStart = tableOffset + batBytes
    let locator: Buffer | undefined
    if (this.options.parent !== undefined) {
      const data = Buffer.from(this.options.parent.relativePath, 'utf16le')
      const sectors = Math.max(1, Math.ceil(data.length / SECTOR_SIZE))
      locator = Buffer.alloc(sectors * SECTOR_SIZE)
      data.copy(locator)
      outHeader.parentLocators[0] = { platformCode: PLATFORMS.W2KU, platformDataSpace: sectors, platformDataLength: data.length, platformDataOffset: dataStart }
      dataStart += locator.length
    }
    this.#fullBlockSize = bitmapSizeBytes(header.blockSizeBytes) + header.blockSizeBytes
    const bat = new Uint32Array(header.maxTableEntries).fill(BLOCK_UNUSED)
    for (let i = 0; i < blockOrder.length; i++) bat[blockOrder[i] as number] = (dataStart + i * this.#fullBlockSize) / SECTOR_SIZE
    if (dataStart + blockOrder.length * this.#fullBlockSize > 0xffffffff * SECTOR_SIZE) throw new RangeError('the VHD would exceed the 2 TiB addressable by its BAT')
    this.#order = blockOrder
    this.#footerBuf = encodeFooter(outFooter)
    const expectedSizeBytes = dataStart + blockOrder.length * this.#fullBlockSize + FOOTER_SIZE
    const stream = await this.remote.createWriteStream(this.path, {
      expectedSizeBytes,
      ...(this.options.exclusive === undefined ? {} : { exclusive: this.options.exclusive }),
      ...(this.options.signal === undefined ? {} : { signal: this.options.signal }),
    })
    this.#out = new WritableSink(stream)
    await this.#out.write(this.#footerBuf)
    await this.#out.write(encodeHeader(outHeader))
    await this.#out.write(encodeBat(bat))
    if (locator !== undefined) await this.#out.write(locator)
  }

  async writeBlock(block: VhdBlock): Promise<void> {
    const out = this.#started()
    const expected = this.#next < this.#order.length ? this.#order[this.#next] : undefined
    if (block.index !== expected) throw new RangeError(`block ${block.index} written where block ${expected ?? '(none: all written)'} was announced`)
    if (block.buffer.length !== this.#fullBlockSize) throw new RangeError(`block ${block.index} is ${block.buffer.length} bytes, expected ${this.#fullBlockSize}`)
    this.#next++
    const onWritten = this.options.onBlockWritten
    await out.write(block.buffer, onWritten === undefined ? undefined : () => onWritten(block))
  }

  async end(): Promise<VhdSinkResult> {
    const out = this.#started()
    if (this.#next !== this.#order.length) throw new RangeError(`only ${this.#next} of the ${this.#order.length} announced blocks were written`)
    await out.write(this.#footerBuf as Buffer)
    await out.finish()
    return { path: this.path, sizeBytes: out.bytesWritten, blocks: this.#next }
  }

  async abort(reason: unknown): Promise<void> {
    this.#aborted = true
    await this.#out?.destroy(reason)
  }

  #started(): WritableSink {
    if (this.#aborted) throw new Error('the VhdFile writer was aborted')
    if (this.#out === undefined) throw new Error('VhdFileSink.begin() must be called first')
    return this.#out
  }
}

/** A sink writing a VhdFile at `path` on `remote` (published on end()). */
export function createVhdFileSink(remote: Remote, path: string, options: VhdFileSinkOptions = {}): VhdSink {
  remote.resolvePath(path)
  if (!path.endsWith('.vhd') || path.endsWith('.alias.vhd')) throw new RangeError(`a VhdFile path must end with .vhd (and not .alias.vhd), got "${path}"`)
  return new VhdFileSink(remote, path, options)
}

/**
 * Random-access readers of a VHD stored on a remote, either kind:
 * - VhdFile (`x.vhd`): footer, header and BAT read and validated against the file size (`planLayout`),
 *   blocks read by range;
 * - VhdDirectory (`data/x.vhd/` reached through `x.alias.vhd`): chunk-filters.json, header, footer,
 *   bit-array BAT, one file per block (decompressed, size-checked).
 *
 * `openVhd(remote, path)` picks the kind: an alias is resolved (relative to its own directory, never an
 * alias to an alias), a directory is a VhdDirectory, anything else a VhdFile.
 */
import { posix } from 'node:path'
import { errorCode } from '../common/errors.js'
import type { Remote, RemoteFile } from '../remotes/remote.js'
import { decodeBat, directoryBatHas, planLayout } from './bat.js'
import { BLOCK_UNUSED, DISK_TYPES, FOOTER_SIZE, HEADER_SIZE, SECTOR_SIZE, bitmapSizeBytes, blockCount } from './constants.js'
import { decompressChunk, parseChunkFilters, storedFrameAround, type ChunkCompression } from './compression.js'
import { corrupt } from './corrupt.js'
import { blockPath } from './directory-sink.js'
import { decodeFooter, type VhdFooter } from './footer.js'
import { decodeHeader, type VhdHeader } from './header.js'
import type { VhdBlock } from './stream-parser.js'

export interface VhdReader {
  readonly kind: 'file' | 'directory'
  /** the path it was opened with (an alias stays an alias) */
  readonly path: string
  /** the VhdFile or the VhdDirectory's data directory */
  readonly dataPath: string
  readonly footer: VhdFooter
  readonly header: VhdHeader
  /** chunk compression (VhdDirectory), 'none' for files */
  readonly compression: ChunkCompression
  hasBlock(index: number): boolean
  /** present block indexes, ascending */
  blockIndexes(): number[]
  /**
   * `into` (bitmap + block bytes): a buffer the block may be read into, e.g. from a VhdBlockPool; the
   * returned block's buffer is then `into`, else (a reader that cannot use it) a buffer of its own.
   */
  readBlock(index: number, signal?: AbortSignal, into?: Buffer): Promise<VhdBlock>
  /**
   * Keeps what block reads need open until as many `release()`s (a VhdFile's RemoteFile: one open for
   * all its blocks instead of one per block); without it each read opens the file. No-op for directories.
   */
  hold(signal?: AbortSignal): Promise<void>
  release(): Promise<void>
}

const ALIAS_MAX_BYTES = 1024

export function isAlias(path: string): boolean {
  return path.endsWith('.alias.vhd')
}

async function readRange(remote: Remote, path: string, start: number, length: number, signal?: AbortSignal): Promise<Buffer> {
  const out = Buffer.allocUnsafeSlow(length)
  let at = 0
  const stream = await remote.createReadStream(path, { start, end: start + length - 1, ...(signal === undefined ? {} : { signal }) })
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    const n = Math.min(chunk.length, length - at)
    chunk.copy(out, at, 0, n)
    at += n
  }
  if (at < length) throw corrupt('stream', 'length', start + at, `${path}: read ${at} of ${length} bytes at ${start} (file truncated)`)
  return out
}

function splitBlock(index: number, buffer: Buffer, bitmapSize: number): VhdBlock {
  return { index, bitmap: buffer.subarray(0, bitmapSize), data: buffer.subarray(bitmapSize), buffer }
}

class VhdFileReader implements VhdReader {
  readonly kind = 'file'
  readonly compression = 'none'
  readonly #bitmapSize: number
  #holders = 0
  #opening: Promise<RemoteFile> | undefined
  #file: RemoteFile | undefined
  constructor(
    readonly remote: Remote,
    readonly path: string,
    readonly footer: VhdFooter,
    readonly header: VhdHeader,
    readonly bat: Uint32Array,
    /** the file's size when its structures were read */
    readonly sizeBytes: number,
  ) {
    this.#bitmapSize = bitmapSizeBytes(header.blockSizeBytes)
  }
  get dataPath(): string {
    return this.path
  }
  hasBlock(index: number): boolean {
    return index < this.bat.length && this.bat[index] !== BLOCK_UNUSED
  }
  blockIndexes(): number[] {
    const out: number[] = []
    for (let i = 0; i < this.bat.length; i++) if (this.bat[i] !== BLOCK_UNUSED) out.push(i)
    return out
  }
  async readBlock(index: number, signal?: AbortSignal, into?: Buffer): Promise<VhdBlock> {
    const entry = this.bat[index]
    if (entry === undefined || entry === BLOCK_UNUSED) throw new RangeError(`block ${index} is not present in ${this.path}`)
    const full = this.#bitmapSize + this.header.blockSizeBytes
    const file = this.#file
    if (file === undefined) return splitBlock(index, await readRange(this.remote, this.path, entry * SECTOR_SIZE, full, signal), this.#bitmapSize)
    const buffer = into?.length === full ? into : Buffer.allocUnsafeSlow(full)
    const n = await file.read(buffer, 0, full, entry * SECTOR_SIZE, signal)
    if (n < full) throw corrupt('stream', 'length', entry * SECTOR_SIZE + n, `${this.path}: read ${n} of ${full} bytes at ${entry * SECTOR_SIZE} (file truncated)`)
    return splitBlock(index, buffer, this.#bitmapSize)
  }
  async hold(signal?: AbortSignal): Promise<void> {
    if (this.#holders++ === 0) this.#opening = this.#openFile(signal)
    try {
      this.#file = await this.#opening
    } catch (error) {
      if (--this.#holders === 0) this.#opening = undefined
      throw error
    }
  }
  async #openFile(signal?: AbortSignal): Promise<RemoteFile> {
    const file = await this.remote.openFile(this.path, signal === undefined ? {} : { signal })
    if (file.size === this.sizeBytes) return file
    await file.close()
    throw corrupt('stream', 'length', 0, `${this.path} is ${file.size} bytes, it was ${this.sizeBytes} when opened (replaced meanwhile)`)
  }
  async release(): Promise<void> {
    if (this.#holders === 0 || --this.#holders > 0) return
    const file = this.#file
    this.#file = undefined
    this.#opening = undefined
    await file?.close()
  }
}

async function openVhdFile(remote: Remote, path: string, signal?: AbortSignal): Promise<VhdReader> {
  const { size } = await remote.stat(path)
  if (size < FOOTER_SIZE * 2 + HEADER_SIZE) throw corrupt('stream', 'length', 0, `${path} is ${size} bytes, too small for a dynamic VHD`)
  const head = await readRange(remote, path, 0, FOOTER_SIZE + HEADER_SIZE, signal)
  const footer = decodeFooter(head.subarray(0, FOOTER_SIZE), 0)
  const tail = decodeFooter(await readRange(remote, path, size - FOOTER_SIZE, FOOTER_SIZE, signal), size - FOOTER_SIZE)
  if (tail.checksum !== footer.checksum || tail.uuid !== footer.uuid) throw corrupt('footer', 'trailing', size - FOOTER_SIZE, `${path}: the trailing footer differs from the head footer`)
  const headerOffset = footer.dataOffset ?? FOOTER_SIZE
  const headerBuf = headerOffset === FOOTER_SIZE ? head.subarray(FOOTER_SIZE) : await readRange(remote, path, headerOffset, HEADER_SIZE, signal)
  const header = decodeHeader(headerBuf, headerOffset, footer)
  if (header.tableOffset + header.maxTableEntries * 4 > size - FOOTER_SIZE) {
    // checked before the table is read: a checksum-valid header may claim up to 2^32 entries (16 GiB)
    throw corrupt('header', 'maxTableEntries', headerOffset + 28, `${path}: the BAT of ${header.maxTableEntries} entries at ${header.tableOffset} runs past the end of the ${size}-byte file`)
  }
  const bat = decodeBat(await readRange(remote, path, header.tableOffset, header.maxTableEntries * 4, signal), header.maxTableEntries, header.tableOffset)
  planLayout(footer, header, bat, size)
  return new VhdFileReader(remote, path, footer, header, bat, size)
}

/** block files being decoded at once by one reader (a restore's read-ahead) */
const SCRATCH_BUFFERS = 4

class VhdDirectoryReader implements VhdReader {
  readonly kind = 'directory'
  readonly #bitmapSize: number
  /** compressed block files are read here (reused) when the caller gives the block's buffer */
  readonly #scratch: Buffer[] = []
  readonly #nBlocks: number
  constructor(
    readonly remote: Remote,
    readonly path: string,
    readonly dataPath: string,
    readonly footer: VhdFooter,
    readonly header: VhdHeader,
    readonly bat: Buffer,
    readonly compression: ChunkCompression,
  ) {
    this.#bitmapSize = bitmapSizeBytes(header.blockSizeBytes)
    this.#nBlocks = Math.min(header.maxTableEntries, blockCount(footer.currentSizeBytes, header.blockSizeBytes))
  }
  hasBlock(index: number): boolean {
    return index < this.#nBlocks && directoryBatHas(this.bat, index)
  }
  blockIndexes(): number[] {
    const out: number[] = []
    for (let i = 0; i < this.#nBlocks; i++) if (directoryBatHas(this.bat, i)) out.push(i)
    return out
  }
  async readBlock(index: number, signal?: AbortSignal, into?: Buffer): Promise<VhdBlock> {
    if (!this.hasBlock(index)) throw new RangeError(`block ${index} is not present in ${this.path}`)
    const path = blockPath(this.dataPath, index)
    const full = this.#bitmapSize + this.header.blockSizeBytes
    const reuse = into?.length === full ? into : undefined
    const scratch: Buffer[] = []
    try {
      let raw: Buffer
      try {
        raw = await this.remote.readFile(path, { ...(signal === undefined ? {} : { signal }), ...(reuse === undefined ? {} : { into: (size: number) => this.#readInto(reuse, size, scratch) }) })
      } catch (error) {
        if (errorCode(error) === 'ENOENT') throw corrupt('directory', `blocks/${index}`, index, `${path} is missing although the BAT lists block ${index}`, error)
        throw error
      }
      // a chunk read in `into`'s own memory is never rebuilt into it (a sparse stream would overwrite itself)
      const inPlace = reuse !== undefined && raw.buffer === reuse.buffer
      let buffer = await decompressChunk(raw, this.compression, `blocks/${index}`, full, inPlace ? undefined : reuse)
      if (buffer.length !== full) throw corrupt('block', `blocks/${index}`, index, `${path} holds ${buffer.length} bytes, expected ${full}`)
      if (reuse !== undefined && buffer.buffer === reuse.buffer && buffer.byteOffset === reuse.byteOffset) buffer = reuse
      else if (scratch[0] !== undefined && buffer.buffer === scratch[0].buffer) scratch.pop() // returned as the block: not reused
      return splitBlock(index, buffer, this.#bitmapSize)
    } finally {
      for (const b of scratch) if (this.#scratch.length < SCRATCH_BUFFERS) this.#scratch.push(b)
    }
  }
  /**
   * Where a block file of `size` bytes is read when the block goes to `into`: uncompressed, `into` itself;
   * a stored brotli chunk, the frame around `into` (the block lands in place, pool margins); anything else
   * (sparse brotli, zlib's) a scratch buffer of the reader (given back after decoding) when it fits.
   */
  #readInto(into: Buffer, size: number, scratch: Buffer[]): Buffer | undefined {
    if (this.compression === 'none') return size === into.length ? into : undefined
    const frame = storedFrameAround(into)
    if (frame !== undefined && size === frame.length) return frame
    if (size > into.length) return undefined
    const b = this.#scratch.pop() ?? Buffer.allocUnsafeSlow(into.length)
    scratch.push(b)
    return b.length >= size ? b : undefined
  }
  async hold(): Promise<void> {
    await Promise.resolve()
  }
  async release(): Promise<void> {
    await Promise.resolve()
  }
}

async function readOptional(remote: Remote, path: string): Promise<Buffer | undefined> {
  try {
    return await remote.readFile(path)
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined
    throw error
  }
}

export async function openVhdDirectory(remote: Remote, dataPath: string, openedAs = dataPath): Promise<VhdReader> {
  const compression = parseChunkFilters((await readOptional(remote, `${dataPath}/chunk-filters.json`))?.toString('utf8'))
  const read = async (name: string, expected?: number): Promise<Buffer> => {
    const raw = await readOptional(remote, `${dataPath}/${name}`)
    if (raw === undefined) throw corrupt('directory', name, 0, `${dataPath}/${name} is missing`)
    return decompressChunk(raw, compression, name, expected)
  }
  const footer = decodeFooter(await read('footer', FOOTER_SIZE), 0)
  const header = decodeHeader(await read('header', HEADER_SIZE), FOOTER_SIZE, footer)
  const bat = await read('bat')
  const needed = Math.ceil(blockCount(footer.currentSizeBytes, header.blockSizeBytes) / 8)
  if (bat.length < needed) throw corrupt('directory', 'bat', 0, `${dataPath}/bat is ${bat.length} bytes, the disk needs ${needed}`)
  return new VhdDirectoryReader(remote, openedAs, dataPath, footer, header, bat, compression)
}

/** Target of an alias, relative to the remote root. */
export async function resolveAlias(remote: Remote, aliasPath: string): Promise<string> {
  const { size } = await remote.stat(aliasPath)
  if (size > ALIAS_MAX_BYTES) throw corrupt('alias', 'size', 0, `${aliasPath} is ${size} bytes, an alias holds a short relative path`)
  const target = (await remote.readFile(aliasPath)).toString('utf8').trim()
  if (target === '' || isAlias(target)) throw corrupt('alias', 'target', 0, `${aliasPath} points to "${target}", expected a VhdDirectory (aliases never chain)`)
  const resolved = posix.normalize(posix.join(posix.dirname(aliasPath), target))
  if (resolved.startsWith('../') || posix.isAbsolute(target)) throw corrupt('alias', 'target', 0, `${aliasPath} points outside the remote ("${target}")`)
  return resolved
}

/** Opens a VhdFile, a VhdDirectory or an alias to one. */
export async function openVhd(remote: Remote, path: string, options: { signal?: AbortSignal } = {}): Promise<VhdReader> {
  if (isAlias(path)) return openVhdDirectory(remote, await resolveAlias(remote, path), path)
  const stat = await remote.stat(path)
  if (stat.isDirectory) return openVhdDirectory(remote, path)
  return openVhdFile(remote, path, options.signal)
}

/** Path of a VHD's parent, from the child's parentUnicodeName (relative to the child's directory). */
export function parentPathOf(child: VhdReader): string {
  if (child.footer.diskType !== DISK_TYPES.DIFFERENCING) throw new RangeError(`${child.path} is not differencing: it has no parent`)
  const name = child.header.parentUnicodeName
  if (name === '') throw corrupt('header', 'parentUnicodeName', FOOTER_SIZE + 64, `${child.path} is differencing but names no parent`)
  const resolved = posix.normalize(posix.join(posix.dirname(child.path), name))
  if (resolved.startsWith('../') || posix.isAbsolute(name)) throw corrupt('header', 'parentUnicodeName', FOOTER_SIZE + 64, `${child.path} names a parent outside the remote ("${name}")`)
  return resolved
}


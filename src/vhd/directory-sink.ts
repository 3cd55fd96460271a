/**
 * VhdDirectory writer, Xen Orchestra's layout for object stores and large remotes:
 *
 *   <dir>/data/<ts>.vhd/header · footer · bat (bit array) · blocks/<id/1000>/<id%1000> ·
 *                       parentLocatorEntry0 (differencing) · chunk-filters.json (when compressed)
 *   <dir>/<ts>.alias.vhd   → "data/<ts>.vhd" (relative), written LAST: it is the publish point
 *
 * Every file is written atomically through the remote; with brotli every chunk (metadata included, as
 * vhd-lib reads them) is compressed, incompressible blocks being stored raw in a brotli envelope (see
 * compression.ts). Up to `concurrency` block files are in flight; `writeBlock` resolves as soon as the
 * sink can take another one (backpressure). `end()` waits for them, checks every announced block was
 * written, writes the metadata, then the alias. `abort()` removes the data directory: a VhdDirectory
 * without its alias is never a backup.
 */
import { posix } from 'node:path'
import { RemoteError, toError } from '../common/errors.js'
import type { Remote } from '../remotes/remote.js'
import { encodeDirectoryBat } from './bat.js'
import { FOOTER_SIZE, HEADER_SIZE, PLATFORMS, SECTOR_SIZE, bitmapSizeBytes } from './constants.js'
import { compressChunk, type ChunkCompression, CHUNK_COMPRESSIONS } from './compression.js'
import { checkBlockOrder, prepareOutputHead } from './file-sink.js'
import { encodeFooter, type VhdFooter } from './footer.js'
import { encodeHeader, type VhdHeader } from './header.js'
import type { VhdParentRef, VhdSink, VhdSinkResult } from './sink.js'
import type { VhdBlock } from './stream-parser.js'
import { WritableSink } from './writable.js'

interface VhdDirectorySinkOptions {
  compression?: ChunkCompression
  /** data directory; default `<dir of alias>/data/<alias name without .alias.vhd>.vhd` */
  dataPath?: string
  parent?: VhdParentRef
  /** block files in flight (default 4) */
  concurrency?: number
  signal?: AbortSignal
  /**
   * Called with each block once its file is written (the remote's write resolved, on any remote: the
   * sink and the remote hold no reference to the block's buffer after that); the caller may then reuse
   * the buffer. Not called for a block whose write failed.
   */
  onBlockWritten?: (block: VhdBlock) => void
}

export function blockPath(dataPath: string, index: number): string {
  return `${dataPath}/blocks/${Math.floor(index / 1000)}/${index % 1000}`
}

/** Default data directory of an alias path. */
export function defaultDataPath(aliasPath: string): string {
  const dir = posix.dirname(aliasPath)
  const name = `data/${posix.basename(aliasPath, '.alias.vhd')}.vhd`
  return dir === '.' ? name : `${dir}/${name}`
}

/** Writes one chunk (possibly in several parts, e.g. a stored brotli envelope) as one atomic file. */
export async function writeChunkFile(remote: Remote, path: string, data: Buffer, compression: ChunkCompression, signal?: AbortSignal): Promise<number> {
  const chunk = await compressChunk(data, compression)
  if (chunk.parts.length === 1) {
    await remote.writeFile(path, chunk.parts[0] as Buffer, signal === undefined ? {} : { signal })
    return chunk.sizeBytes
  }
  const out = new WritableSink(await remote.createWriteStream(path, { expectedSizeBytes: chunk.sizeBytes, ...(signal === undefined ? {} : { signal }) }))
  try {
    for (const part of chunk.parts) await out.write(part)
    await out.finish()
  } catch (error) {
    await out.destroy(error)
    throw error
  }
  return chunk.sizeBytes
}

class VhdDirectorySink implements VhdSink {
  readonly #compression: ChunkCompression
  readonly #concurrency: number
  readonly dataPath: string
  #order: ArrayLike<number> = []
  #next = 0
  #inFlight = new Set<Promise<void>>()
  #error: Error | undefined
  #footer: VhdFooter | undefined
  #header: VhdHeader | undefined
  #fullBlockSize = 0
  #bytes = 0
  #begun = false
  #aborted = false

  constructor(
    readonly remote: Remote,
    readonly aliasPath: string,
    readonly options: VhdDirectorySinkOptions,
  ) {
    this.#compression = options.compression ?? 'none'
    this.#concurrency = options.concurrency ?? 4
    this.dataPath = options.dataPath ?? defaultDataPath(aliasPath)
  }

  async begin(footer: VhdFooter, header: VhdHeader, blockOrder: ArrayLike<number>): Promise<void> {
    if (this.#begun) throw new Error('VhdDirectorySink.begin() called twice')
    this.#begun = true
    checkBlockOrder(blockOrder, footer, header)
    if (await this.remote.exists(this.dataPath)) {
      throw new RemoteError('EEXIST', `${this.dataPath} already exists on ${this.remote.displayUrl}: a VhdDirectory is never written over another (remove the leftover of an interrupted run first)`, { fields: { path: this.dataPath } })
    }
    const head = prepareOutputHead(footer, header, FOOTER_SIZE + HEADER_SIZE, this.options.parent)
    this.#footer = head.footer
    this.#header = head.header
    this.#order = blockOrder
    this.#fullBlockSize = bitmapSizeBytes(header.blockSizeBytes) + header.blockSizeBytes
  }

  async writeBlock(block: VhdBlock): Promise<void> {
    this.#check()
    const expected = this.#next < this.#order.length ? this.#order[this.#next] : undefined
    if (block.index !== expected) throw new RangeError(`block ${block.index} written where block ${expected ?? '(none: all written)'} was announced`)
    if (block.buffer.length !== this.#fullBlockSize) throw new RangeError(`block ${block.index} is ${block.buffer.length} bytes, expected ${this.#fullBlockSize}`)
    this.#next++
    const write = writeChunkFile(this.remote, blockPath(this.dataPath, block.index), block.buffer, this.#compression, this.options.signal).then(
      (n) => {
        this.#bytes += n
        this.options.onBlockWritten?.(block)
      },
      (error: unknown) => {
        this.#error ??= toError(error)
      },
    )
    const tracked = write.finally(() => this.#inFlight.delete(tracked))
    this.#inFlight.add(tracked)
    while (this.#inFlight.size >= this.#concurrency) await Promise.race(this.#inFlight)
    this.#check()
  }

  async end(): Promise<VhdSinkResult> {
    this.#check()
    await Promise.all(this.#inFlight)
    this.#check()
    if (this.#next !== this.#order.length) throw new RangeError(`only ${this.#next} of the ${this.#order.length} announced blocks were written`)
    const header = this.#header as VhdHeader
    const present = new Uint8Array(header.maxTableEntries)
    for (let i = 0; i < this.#order.length; i++) present[this.#order[i] as number] = 1
    const c = this.#compression
    const signal = this.options.signal
    if (this.options.parent !== undefined) {
      const data = Buffer.from(this.options.parent.relativePath, 'utf16le')
      this.#bytes += await writeChunkFile(this.remote, `${this.dataPath}/parentLocatorEntry0`, data, c, signal)
      header.parentLocators[0] = { platformCode: PLATFORMS.W2KU, platformDataSpace: Math.max(1, Math.ceil(data.length / SECTOR_SIZE)), platformDataLength: data.length, platformDataOffset: 0 }
    }
    this.#bytes += await writeChunkFile(this.remote, `${this.dataPath}/bat`, encodeDirectoryBat(header.maxTableEntries, (i) => present[i] === 1), c, signal)
    this.#bytes += await writeChunkFile(this.remote, `${this.dataPath}/header`, encodeHeader(header), c, signal)
    this.#bytes += await writeChunkFile(this.remote, `${this.dataPath}/footer`, encodeFooter(this.#footer as VhdFooter), c, signal)
    if (c !== 'none') await this.remote.writeFile(`${this.dataPath}/chunk-filters.json`, JSON.stringify([c]), signal === undefined ? {} : { signal })
    const target = posix.relative(posix.dirname(`/${this.aliasPath}`), `/${this.dataPath}`)
    await this.remote.writeFile(this.aliasPath, target, signal === undefined ? {} : { signal })
    return { path: this.aliasPath, sizeBytes: this.#bytes, blocks: this.#next }
  }

  async abort(reason: unknown): Promise<void> {
    this.#aborted = true
    this.#error ??= toError(reason)
    await Promise.allSettled(this.#inFlight)
    if (this.#begun) await this.remote.rmtree(this.dataPath)
  }

  #check(): void {
    if (this.#aborted) throw new Error('the VhdDirectory writer was aborted', { cause: this.#error })
    if (!this.#begun) throw new Error('VhdDirectorySink.begin() must be called first')
    if (this.#error !== undefined) throw this.#error
  }
}

/** A sink writing a VhdDirectory published by its alias `aliasPath` (`…/<ts>.alias.vhd`). */
export function createVhdDirectorySink(remote: Remote, aliasPath: string, options: VhdDirectorySinkOptions = {}): VhdSink {
  remote.resolvePath(aliasPath)
  if (!aliasPath.endsWith('.alias.vhd')) throw new RangeError(`a VhdDirectory is published by an alias named *.alias.vhd, got "${aliasPath}"`)
  if (options.compression !== undefined && !CHUNK_COMPRESSIONS.includes(options.compression)) {
    throw new RangeError(`compression must be one of ${CHUNK_COMPRESSIONS.join(', ')}, got "${String(options.compression)}" (zstd is not available: see docs/vhd.md)`)
  }
  if (options.concurrency !== undefined && (!Number.isInteger(options.concurrency) || options.concurrency < 1 || options.concurrency > 64)) {
    throw new RangeError(`concurrency must be an integer from 1 to 64, got ${options.concurrency}`)
  }
  return new VhdDirectorySink(remote, aliasPath, options)
}

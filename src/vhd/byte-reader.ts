/**
 * Sequential reader over a byte stream (a Readable or any async iterable of chunks) that hands out
 * exact-size pieces: a view into the current chunk when the piece fits in it (no copy), else one copy
 * into a fresh buffer. It never concatenates chunks repeatedly and keeps at most one source chunk, so
 * memory stays bounded whatever the stream size. Reading past the end throws a VhdCorruptError naming
 * the structure being read (a truncated stream).
 */
import { corrupt, type VhdStructure } from './corrupt.js'

export type ByteSource = AsyncIterable<Uint8Array>

export class ByteReader {
  readonly #iterator: AsyncIterator<Uint8Array>
  #chunk: Buffer = Buffer.alloc(0)
  #chunkPos = 0
  #ended = false
  /** absolute offset of the next byte to read */
  position = 0

  constructor(source: ByteSource) {
    this.#iterator = source[Symbol.asyncIterator]()
  }

  get #available(): number {
    return this.#chunk.length - this.#chunkPos
  }

  async #fill(): Promise<boolean> {
    while (this.#available === 0) {
      if (this.#ended) return false
      const next: IteratorResult<Uint8Array> = await this.#iterator.next()
      if (next.done === true) {
        this.#ended = true
        return false
      }
      const value = next.value
      this.#chunk = Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength)
      this.#chunkPos = 0
    }
    return true
  }

  /**
   * Reads exactly `length` bytes. The result is a view of the source chunk when it fits (zero copy) or
   * a new buffer otherwise; `into` (when given, at least `length` long) forces the bytes into it, and an
   * `into` function supplies the buffer to copy into only when a copy is needed (a pooled buffer).
   */
  async read(length: number, structure: VhdStructure, field: string, into?: Buffer | ((length: number) => Buffer)): Promise<Buffer> {
    const start = this.position
    if (into === undefined || typeof into === 'function') {
      if (!(await this.#fill()) && length > 0) throw this.#truncated(structure, field, start, length, 0)
      if (this.#available >= length) {
        const view = this.#chunk.subarray(this.#chunkPos, this.#chunkPos + length)
        this.#chunkPos += length
        this.position += length
        return view
      }
    }
    const target = into === undefined ? Buffer.allocUnsafeSlow(length) : typeof into === 'function' ? into(length) : into
    let done = 0
    while (done < length) {
      if (!(await this.#fill())) throw this.#truncated(structure, field, start, length, done)
      const n = Math.min(length - done, this.#available)
      this.#chunk.copy(target, done, this.#chunkPos, this.#chunkPos + n)
      this.#chunkPos += n
      done += n
      this.position += n
    }
    return target.length === length ? target : target.subarray(0, length)
  }

  /** Skips `length` bytes (padding between regions). */
  async skip(length: number, structure: VhdStructure, field: string): Promise<void> {
    const start = this.position
    let left = length
    while (left > 0) {
      if (!(await this.#fill())) throw this.#truncated(structure, field, start, length, length - left)
      const n = Math.min(left, this.#available)
      this.#chunkPos += n
      left -= n
      this.position += n
    }
  }

  /** Reads to the end of the stream and returns its last `keep` bytes (and how many bytes were read). */
  async readTail(keep: number): Promise<{ tail: Buffer; bytesRead: number }> {
    const tail = Buffer.alloc(keep)
    let have = 0
    const start = this.position
    while (await this.#fill()) {
      const piece = this.#chunk.subarray(this.#chunkPos)
      this.#chunkPos = this.#chunk.length
      this.position += piece.length
      if (piece.length >= keep) {
        piece.copy(tail, 0, piece.length - keep)
        have = keep
      } else {
        const shift = Math.max(0, have + piece.length - keep)
        if (shift > 0) tail.copy(tail, 0, shift, have)
        have -= shift
        piece.copy(tail, have)
        have += piece.length
      }
    }
    return { tail: tail.subarray(0, have), bytesRead: this.position - start }
  }

  /** Stops reading: the source's iterator is returned (a Readable is destroyed). */
  async close(): Promise<void> {
    this.#ended = true
    await this.#iterator.return?.()
  }

  #truncated(structure: VhdStructure, field: string, start: number, length: number, got: number): Error {
    return corrupt(structure, field, start + got, `the stream ended after ${got} of the ${length} bytes expected at byte ${start} (truncated export)`)
  }
}

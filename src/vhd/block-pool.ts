/**
 * Reusable block buffers for the stream parser. Without a pool the parser allocates a fresh buffer per
 * block (2 MiB + bitmap) to gather the socket's 64 KiB chunks into: at disk speed that is hundreds of
 * large allocations a second, each paid again in page faults and garbage collection (profiled as the
 * main cost of a disk export after the copy itself).
 *
 * Ownership is explicit and the default is safe: a block buffer taken from the pool goes back to it only
 * when its owner calls `share(buffer, n)` and then `done(buffer)` n times — once per writer, each when
 * that writer no longer references the buffer. A buffer whose writers never all report (a writer failed,
 * or one that cannot tell when it is done with a chunk) is simply left to the garbage collector, and the
 * pool allocates a new one: a missed release costs an allocation, never a corrupted block.
 */

interface VhdBlockPoolOptions {
  /** free buffers kept for reuse (beyond that, released buffers are left to the GC); default 8 */
  maxFree?: number
  /**
   * spare bytes of the same memory before and after each buffer (default none): a reader may read a
   * framed block (a stored brotli meta-block: header, block, trailer) so that the block lands in place
   */
  margin?: { before: number; after: number }
}

export class VhdBlockPool {
  readonly #free: Buffer[] = []
  readonly #maxFree: number
  /**
   * buffers handed out and not yet back, by their memory (a view of the whole buffer — what a parser
   * hands out when a source chunk is the block — is the same buffer) → the buffer and the writers still
   * to report (weak: an unreported buffer is GC'd)
   */
  readonly #out = new WeakMap<ArrayBufferLike, { buffer: Buffer; writers: number }>()
  readonly #margin: { before: number; after: number }
  #allocated = 0

  constructor(options: VhdBlockPoolOptions = {}) {
    const maxFree = options.maxFree ?? 8
    if (!Number.isInteger(maxFree) || maxFree < 0) throw new RangeError(`maxFree must be a whole number >= 0, got ${maxFree}`)
    this.#maxFree = maxFree
    const margin = options.margin ?? { before: 0, after: 0 }
    if (![margin.before, margin.after].every((n) => Number.isInteger(n) && n >= 0)) throw new RangeError(`margins must be whole numbers >= 0, got ${margin.before} and ${margin.after}`)
    this.#margin = margin
  }

  /** buffers allocated so far (reuse keeps this small) */
  get allocated(): number {
    return this.#allocated
  }

  /** A buffer of exactly `length` bytes (the pool's margins around it), reused when one is free; its content is undefined. */
  acquire(length: number): Buffer {
    let buffer = this.#free.pop()
    while (buffer !== undefined && buffer.length !== length) buffer = this.#free.pop()
    if (buffer === undefined) {
      const { before, after } = this.#margin
      buffer = before + after === 0 ? Buffer.allocUnsafeSlow(length) : Buffer.allocUnsafeSlow(before + length + after).subarray(before, before + length)
      this.#allocated++
    }
    this.#out.set(buffer.buffer, { buffer, writers: 0 })
    return buffer
  }

  /**
   * Declares that `buffer` is being handed to `writers` writers; it returns to the pool after as many
   * `done()`. A buffer not from this pool (e.g. a view of a source chunk) is ignored.
   */
  share(buffer: Buffer, writers: number): void {
    const owned = this.#owned(buffer)
    if (owned === undefined) return
    if (writers <= 0) this.#release(owned.buffer)
    else owned.writers = writers
  }

  /** One writer is done with `buffer`: it no longer reads it and holds no reference to it. */
  done(buffer: Buffer): void {
    const owned = this.#owned(buffer)
    if (owned === undefined) return
    owned.writers--
    if (owned.writers <= 0) this.#release(owned.buffer)
  }

  /** the pool's record of `buffer` when it is one of its buffers (or a view of the whole of one) */
  #owned(buffer: Buffer): { buffer: Buffer; writers: number } | undefined {
    const owned = this.#out.get(buffer.buffer)
    return owned !== undefined && buffer.byteOffset === owned.buffer.byteOffset && buffer.length === owned.buffer.length ? owned : undefined
  }

  #release(buffer: Buffer): void {
    this.#out.delete(buffer.buffer)
    if (this.#free.length < this.#maxFree) this.#free.push(buffer)
  }
}

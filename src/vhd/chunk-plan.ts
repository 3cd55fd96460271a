/**
 * Where the bytes of a VHD stream should land as they come off the network, so that each block arrives
 * as one chunk in its own pooled buffer and the parser hands it on without copying it (the kernel's
 * socket read is then the only copy of a block's bytes before the writers' own).
 *
 * A transport that can read into caller buffers (xapi/socket-export.ts, `chunkBuffer`) asks
 * `bufferFor(offset)` for the buffer the stream bytes from `offset` on go into, and yields it once
 * filled. Until the parser has read the BAT (`setLayout`) the plan knows nothing and returns small
 * buffers; afterwards a block's start gets a block-sized buffer from the pool, a gap (padding, parent
 * locators) a buffer reaching the next block, and a block whose start was already read (read-ahead
 * before the layout was known) a buffer reaching its end — so from then on chunks are aligned on
 * blocks. The plan only decides chunk boundaries: the parser still validates every byte, and a stream
 * that does not follow its BAT is simply copied (and reported) as usual.
 */
import type { VhdBlockPool } from './block-pool.js'

/** chunk size while the layout is unknown (head, BAT) and after the last block */
const SMALL_CHUNK_BYTES = 64 * 1024
/** largest chunk of a gap between blocks */
const MAX_GAP_CHUNK_BYTES = 1024 * 1024

export class VhdChunkPlan {
  /** stream offsets of the blocks, increasing */
  #starts: ArrayLike<number> | undefined
  #blockBytes = 0
  /** index in #starts of the first block not entirely before the last offset asked */
  #cursor = 0

  constructor(readonly pool: VhdBlockPool) {}

  /** The blocks' stream offsets (increasing) and their size (bitmap + data); called once by the parser. */
  setLayout(blockOffsets: ArrayLike<number>, blockBytes: number): void {
    if (this.#starts !== undefined) throw new Error('VhdChunkPlan.setLayout() called twice')
    this.#starts = blockOffsets
    this.#blockBytes = blockBytes
  }

  /** The buffer for the stream bytes from `offset` on (offsets asked only increase). */
  bufferFor(offset: number): Buffer {
    const starts = this.#starts
    if (starts === undefined) return Buffer.allocUnsafeSlow(SMALL_CHUNK_BYTES)
    const size = this.#blockBytes
    while (this.#cursor < starts.length && (starts[this.#cursor] as number) + size <= offset) this.#cursor++
    const start = this.#cursor < starts.length ? (starts[this.#cursor] as number) : undefined
    if (start === undefined) return Buffer.allocUnsafeSlow(SMALL_CHUNK_BYTES)
    if (offset === start) return this.pool.acquire(size)
    if (offset < start) return Buffer.allocUnsafeSlow(Math.min(start - offset, MAX_GAP_CHUNK_BYTES))
    return Buffer.allocUnsafeSlow(start + size - offset)
  }
}

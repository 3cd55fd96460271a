/**
 * Reused read buffers for a socket opened with `onread` (raw-get.ts, the XVA export's GET). Node's
 * default socket reads hand out a fresh buffer per read (64 KiB allocated, a short read copied into one
 * of its size: our reading of Node's stream code); reading an XVA export into reused slabs instead cut
 * the transfer's user CPU from 2.45–2.51 to 1.22–1.29 s/GiB (every byte of the VM goes through the
 * proxy's main thread; an export from the simulator, the two readers alternated in one process). Written
 * by hand: Node offers `onread` but no pool behind it. Here the socket reads into the unused tail of a 1 MiB
 * slab, each read is handed on as a view of its slab, and a slab is read into again only once every view
 * of it was handed back (`release`) — a view never handed back keeps its slab out of the pool for good, so
 * a consumer that does not release is safe, only slower.
 *
 * The consumer must release a view only when nothing will read it again: in the XVA export that is once
 * every target's write of it completed (fan-out `onBlockSettled`), and only writers known to be done with
 * a buffer when their write calls back get the views themselves (the others get a copy).
 */

/** slab size; a read gets the rest of the current slab, a new one when less than MIN_READ_BYTES is left */
const SLAB_BYTES = 1024 * 1024
const MIN_READ_BYTES = 64 * 1024
/** released slabs kept for reuse beyond this are left to the GC (bounded memory once a burst is over) */
const MAX_FREE_SLABS = 4

interface Slab {
  buffer: Buffer
  /** views handed out and not released */
  views: number
  /** the socket still reads into it */
  filling: boolean
}

export class SlabPool {
  readonly #free: Slab[] = []
  readonly #byMemory = new WeakMap<ArrayBufferLike, Slab>()
  #current: Slab | undefined
  #used = 0

  /** The buffer the socket's next read goes into (onread's `buffer` function). */
  next(): Buffer {
    let slab = this.#current
    if (slab === undefined || SLAB_BYTES - this.#used < MIN_READ_BYTES) {
      if (slab !== undefined) this.#retire(slab)
      slab = this.#free.pop() ?? this.#allocate()
      slab.filling = true
      this.#current = slab
      this.#used = 0
    }
    return slab.buffer.subarray(this.#used)
  }

  /** The `n` bytes just read into `next()`'s buffer, as a view; the slab's next read starts after them. */
  take(n: number, buf: Uint8Array): Buffer {
    this.#used += n
    return Buffer.from(buf.buffer, buf.byteOffset, n)
  }

  /** Counts a view (or a slice of one) handed to the consumer: its slab is not reused until it is released. */
  retain(view: Buffer): void {
    const slab = this.#byMemory.get(view.buffer)
    if (slab !== undefined) slab.views++
  }

  /** The consumer is done with a retained view: its slab is reused once no view of it is held. */
  release(view: Buffer): void {
    const slab = this.#byMemory.get(view.buffer)
    if (slab === undefined || slab.views === 0) return
    slab.views--
    if (slab.views === 0 && !slab.filling) this.#recycle(slab)
  }

  #allocate(): Slab {
    const slab: Slab = { buffer: Buffer.allocUnsafeSlow(SLAB_BYTES), views: 0, filling: false }
    this.#byMemory.set(slab.buffer.buffer, slab)
    return slab
  }

  #retire(slab: Slab): void {
    slab.filling = false
    if (slab.views === 0) this.#recycle(slab)
  }

  #recycle(slab: Slab): void {
    if (this.#free.length < MAX_FREE_SLABS) this.#free.push(slab)
  }
}

/**
 * The XVA export's reused read buffers (SlabPool): a slab is read into again only once every view of it
 * handed to the consumer was released — never while one is held, never for a view never released.
 */
import { describe, expect, it } from 'vitest'
import { SlabPool } from '../../src/xapi/slab-pool.js'

/** Simulates one socket read of `n` bytes of `fill` into the pool's next buffer; returns the view. */
function read(pool: SlabPool, n: number, fill: number): Buffer {
  const into = pool.next()
  into.fill(fill, 0, n)
  return pool.take(n, into)
}

const MiB = 1024 * 1024

describe('SlabPool', () => {
  it('fills a slab with successive reads, then reuses it only once all its views are released', () => {
    const pool = new SlabPool()
    const a = read(pool, 600 * 1024, 1)
    const b = read(pool, 400 * 1024, 2)
    expect(b.buffer).toBe(a.buffer) // the same slab, after a
    expect(b.byteOffset).toBe(a.byteOffset + a.length)
    pool.retain(a)
    pool.retain(b)
    // less than 64 KiB left: the next read starts another slab; the first is held by a and b
    const c = read(pool, MiB, 3)
    expect(c.buffer).not.toBe(a.buffer)
    pool.release(a)
    const d = read(pool, 1000, 4) // the second slab is full: a third (the first still has b)
    expect(d.buffer).not.toBe(a.buffer)
    expect(a.every((x) => x === 1) && b.every((x) => x === 2)).toBe(true)
    pool.release(b)
    pool.retain(d)
    read(pool, MiB - 1000, 5) // fills the third slab
    const e = read(pool, 10, 6) // the first slab is free again: it takes the read
    expect(e.buffer).toBe(a.buffer)
  })

  it('never reuses a slab with a view that is not released, nor releases twice', () => {
    const pool = new SlabPool()
    const held = read(pool, MiB, 7)
    pool.retain(held)
    const seen = new Set<ArrayBufferLike>([held.buffer])
    for (let i = 0; i < 20; i++) {
      const v = read(pool, MiB, 8)
      pool.retain(v)
      pool.release(v)
      pool.release(v) // a second release of the same view changes nothing
      seen.add(v.buffer)
    }
    expect(held.every((x) => x === 7)).toBe(true)
    // the released slabs were reused (a few at most), the held one never
    expect(seen.size).toBeLessThan(6)
  })

  it('a view never retained (a response head) does not keep its slab: the next reads may land in it', () => {
    const pool = new SlabPool()
    const head = read(pool, MiB, 9)
    const next = read(pool, 10, 1)
    expect(next.buffer).toBe(head.buffer) // so raw-get copies a head it keeps across reads
    expect(head[0]).toBe(1)
  })
})

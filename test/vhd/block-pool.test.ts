import { describe, expect, it } from 'vitest'
import { VhdBlockPool } from '../../src/vhd/block-pool.js'
import { openVhdStream } from '../../src/vhd/stream-parser.js'
import { chunked, makeFixture } from './fixtures.js'

const MiB = 1024 * 1024

describe('VhdBlockPool', () => {
  it('reuses a buffer only once every writer is done with it', () => {
    const pool = new VhdBlockPool()
    const a = pool.acquire(1024)
    pool.share(a, 2)
    pool.done(a)
    const b = pool.acquire(1024)
    expect(b).not.toBe(a) // one writer still holds a
    pool.done(a)
    expect(pool.acquire(1024)).toBe(a)
    expect(pool.allocated).toBe(2)
    pool.done(Buffer.alloc(1024)) // not from the pool: ignored
    expect(pool.acquire(2048)).not.toBe(a)
  })

  it('parses with pooled buffers: blocks reused after release, content intact', async () => {
    const fx = makeFixture({ sizeBytes: 12 * MiB })
    const pool = new VhdBlockPool()
    const vhd = await openVhdStream(chunked(fx.vhd, 65536), { blockPool: pool })
    const raw = Buffer.alloc(fx.raw.length)
    for await (const block of vhd.blocks()) {
      pool.share(block.buffer, 1)
      block.data.copy(raw, block.index * 2 * MiB)
      pool.done(block.buffer)
    }
    expect(raw.equals(fx.raw)).toBe(true)
    expect(pool.allocated).toBe(1)
  })
})

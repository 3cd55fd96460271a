import { describe, expect, it } from 'vitest'
import { VhdBlockPool } from '../../src/vhd/block-pool.js'
import { VhdChunkPlan } from '../../src/vhd/chunk-plan.js'
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

  it('takes a view of the whole of a pooled buffer as that buffer, and ignores a partial view', () => {
    const pool = new VhdBlockPool()
    const a = pool.acquire(1024)
    pool.share(a.subarray(0), 1)
    pool.done(a.subarray(0, 512)) // part of it: not the pool's buffer
    expect(pool.acquire(1024)).not.toBe(a)
    pool.done(a.subarray())
    expect(pool.acquire(1024)).toBe(a)
  })
})

describe('VhdChunkPlan', () => {
  /** a transport reading into the plan's buffers: each chunk is the buffer it was given, filled */
  async function* planned(vhd: Buffer, plan: VhdChunkPlan, yielded: Buffer[]): AsyncGenerator<Buffer> {
    await Promise.resolve()
    for (let offset = 0; offset < vhd.length; ) {
      const target = plan.bufferFor(offset)
      const n = vhd.copy(target, 0, offset)
      offset += n
      const chunk = target.subarray(0, n)
      yielded.push(chunk)
      yield chunk
    }
  }

  for (const layout of [{ name: 'contiguous blocks', spec: {} }, { name: 'gaps and blocks out of index order', spec: { gapSectors: 9, reverseOffsets: true } }]) {
    it(`lays chunks on blocks (${layout.name}): once the BAT is read, every block is its own pooled chunk, used without a copy`, async () => {
      const fx = makeFixture({ sizeBytes: 16 * MiB, blocks: [0, 2, 3, 5, 7], ...layout.spec })
      const pool = new VhdBlockPool()
      const plan = new VhdChunkPlan(pool)
      const yielded: Buffer[] = []
      const vhd = await openVhdStream(planned(fx.vhd, plan, yielded), { blockPool: pool, chunkPlan: plan })
      const raw = Buffer.alloc(fx.raw.length)
      let blocks = 0
      let zeroCopy = 0
      for await (const block of vhd.blocks()) {
        // zero copy: the chunk the parser read last is the block itself (same memory, whole)
        const last = yielded.at(-1)!
        if (block.buffer.buffer === last.buffer && block.buffer.length === last.buffer.byteLength) zeroCopy++
        pool.share(block.buffer, 1)
        block.data.copy(raw, block.index * 2 * MiB)
        pool.done(block.buffer)
        blocks++
      }
      expect(blocks).toBe(5)
      // only the first block may have been copied: its start came in the head's chunk, read before the
      // layout was known
      expect(zeroCopy).toBeGreaterThanOrEqual(4)
      expect(raw.equals(fx.raw)).toBe(true)
      expect(pool.allocated).toBeLessThanOrEqual(2) // released after each block, so the next one reuses it
    })
  }
})

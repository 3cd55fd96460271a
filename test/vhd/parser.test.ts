import { describe, expect, it } from 'vitest'
import { openVhdStream } from '../../src/vhd/stream-parser.js'
import { chunked, makeFixture } from './fixtures.js'

const MiB = 1024 * 1024

describe('stream parser', () => {
  const cases = [
    { name: 'tiny (1 sector)', sizeBytes: 512 },
    { name: 'odd size', sizeBytes: 5 * MiB + 1536 },
    { name: 'sparse', sizeBytes: 20 * MiB, blocks: [1, 7, 9] },
    { name: 'full', sizeBytes: 8 * MiB },
    { name: '1 block', sizeBytes: 2 * MiB },
    { name: 'partial last block', sizeBytes: 3 * MiB },
    { name: 'gaps and reverse offsets', sizeBytes: 10 * MiB, gapSectors: 3, reverseOffsets: true },
    { name: 'empty', sizeBytes: 10 * MiB, blocks: [] },
  ]
  for (const c of cases) {
    it(`parses ${c.name}`, async () => {
      const fx = makeFixture(c)
      for (const chunkSize of [1000, 65536, fx.vhd.length]) {
        const vhd = await openVhdStream(chunked(fx.vhd, chunkSize))
        expect(vhd.footer.currentSizeBytes).toBe(c.sizeBytes)
        expect([...vhd.blockOrder]).toEqual(fx.blocks)
        const raw = Buffer.alloc(c.sizeBytes)
        const seen: number[] = []
        for await (const block of vhd.blocks()) {
          seen.push(block.index)
          expect(block.bitmap.length).toBe(512)
          expect(block.data.length).toBe(2 * MiB)
          block.data.copy(raw, block.index * 2 * MiB, 0, Math.min(2 * MiB, c.sizeBytes - block.index * 2 * MiB))
        }
        expect(seen).toEqual(fx.blocks)
        expect(raw.equals(fx.raw)).toBe(true)
        expect(vhd.bytesRead).toBe(fx.vhd.length)
      }
    })
  }
})

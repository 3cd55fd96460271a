import { randomBytes } from 'node:crypto'
import { brotliCompressSync, brotliDecompressSync, constants } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { encodeSparseBrotli, parseSparseBrotli, sectorRuns } from '../../src/vhd/brotli-sparse.js'
import { compressChunk, decompressChunk } from '../../src/vhd/compression.js'

const MiB = 1024 * 1024
const zeros = (n: number): Buffer => Buffer.alloc(n)

/** a 2 MiB block + bitmap: in every 4 KiB, 1 KiB of random bytes then zeros (the simulator's compressible pattern) */
function zerosAndRandom(): Buffer {
  const parts: Buffer[] = [Buffer.alloc(512, 0xff)]
  for (let at = 0; at < 2 * MiB; at += 4096) parts.push(randomBytes(1024), zeros(3072))
  return Buffer.concat(parts)
}

describe('sparse brotli streams (zero runs + stored runs)', () => {
  const shapes: Record<string, Buffer> = {
    'all zeros': zeros(2 * MiB + 512),
    'one zero sector': zeros(512),
    'data, a zero run, a partial sector': Buffer.concat([randomBytes(512), zeros(MiB), randomBytes(1000)]),
    'zero runs of 1, 6 and 3000 sectors': Buffer.concat([zeros(512), randomBytes(1024), zeros(3072), randomBytes(1024), zeros(512 * 3000)]),
    'runs needing 5-nibble lengths': Buffer.concat([zeros(70000 - (70000 % 512)), zeros(512 * 2100), randomBytes(512)]),
    'short data only': randomBytes(100),
    'zeros and random every 4 KiB': zerosAndRandom(),
  }
  for (const [name, data] of Object.entries(shapes)) {
    it(`${name}: zlib's decoder reads it, and so does the parser without it`, () => {
      const encoded = encodeSparseBrotli(data, sectorRuns(data))
      expect(brotliDecompressSync(encoded).equals(data)).toBe(true)
      expect(parseSparseBrotli(encoded, data.length)?.equals(data)).toBe(true)
      const dataBytes = sectorRuns(data).reduce((n, r) => n + (r.zero ? 0 : r.end - r.start), 0)
      expect(encoded.length).toBeLessThan(dataBytes + 64 + sectorRuns(data).length * 13)
    })
  }

  it('rebuilds into a given buffer of the right size, zero runs included (a reused pool buffer)', () => {
    const data = zerosAndRandom()
    const encoded = encodeSparseBrotli(data, sectorRuns(data))
    const into = Buffer.alloc(data.length, 0xa5)
    expect(parseSparseBrotli(encoded, data.length, into)).toBe(into)
    expect(into.equals(data)).toBe(true)
    const wrongSize = Buffer.alloc(data.length - 1)
    expect(parseSparseBrotli(encoded, data.length, wrongSize)?.equals(data)).toBe(true)
  })

  it('the parser leaves every other stream to zlib: brotli output, a wrong size, a damaged or cut stream', () => {
    const data = zerosAndRandom()
    const encoded = encodeSparseBrotli(data, sectorRuns(data))
    const zlibMade = brotliCompressSync(data, { params: { [constants.BROTLI_PARAM_QUALITY]: 0 } })
    expect(parseSparseBrotli(zlibMade, data.length)).toBeUndefined()
    expect(parseSparseBrotli(encoded, data.length + 1)).toBeUndefined()
    expect(parseSparseBrotli(encoded, data.length - 1)).toBeUndefined()
    expect(parseSparseBrotli(encoded.subarray(0, encoded.length - 1), data.length)).toBeUndefined()
    expect(parseSparseBrotli(Buffer.concat([encoded, Buffer.from([0])]), data.length)).toBeUndefined()
    // every bit of the stream header + first stored meta-block header (bytes 0-2), and of the zero
    // meta-block after its 1536 bytes (bitmap + 1 KiB), flipped in turn
    const bits = [...Array.from({ length: 24 }, (_, i) => i), ...Array.from({ length: 16 * 8 }, (_, i) => (3 + 1536) * 8 + i)]
    for (const bit of bits) {
      const damaged = Buffer.from(encoded)
      damaged[bit >>> 3]! ^= 1 << (bit & 7)
      const parsed = parseSparseBrotli(damaged, data.length)
      if (parsed === undefined) continue
      // accepted only when zlib decodes the damaged stream to the same bytes (a flipped payload bit)
      expect(parsed.equals(brotliDecompressSync(damaged))).toBe(true)
    }
  })

  it('compressChunk picks it for zero sectors among incompressible ones, decompressChunk reads it back', async () => {
    const data = zerosAndRandom()
    const chunk = await compressChunk(data, 'brotli')
    const encoded = Buffer.concat(chunk.parts)
    expect(parseSparseBrotli(encoded, data.length)?.equals(data)).toBe(true)
    expect(chunk.sizeBytes).toBeLessThan(MiB * 0.51)
    expect((await decompressChunk(encoded, 'brotli', 'x', data.length)).equals(data)).toBe(true)
    expect(brotliDecompressSync(encoded).equals(data)).toBe(true)
  })

  it('compressChunk keeps brotli for compressible data among zero sectors', async () => {
    const text = Buffer.from('the quick brown fox jumps over the lazy dog. '.repeat(30))
    const parts: Buffer[] = [Buffer.alloc(512, 0xff)]
    for (let at = 0; at < 2 * MiB; at += 4096) parts.push(text.subarray(0, 1024), zeros(3072))
    const data = Buffer.concat(parts)
    const chunk = await compressChunk(data, 'brotli')
    const encoded = Buffer.concat(chunk.parts)
    expect(parseSparseBrotli(encoded, data.length)).toBeUndefined()
    expect(chunk.sizeBytes).toBeLessThan(data.length / 50)
    expect((await decompressChunk(encoded, 'brotli', 'x', data.length)).equals(data)).toBe(true)
  })
})

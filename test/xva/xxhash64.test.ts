/**
 * XXH64 (XAPI's XVA chunk checksum) against vectors computed with the system's libxxhash 0.8
 * (`XXH64(data, len, 0)` through ctypes) for lengths crossing every branch of the algorithm (stripes,
 * 8-, 4- and 1-byte tails) and a whole 1 MiB chunk; data byte i = (i × 131 + 7) mod 256.
 */
import { describe, expect, it } from 'vitest'
import { xxh64Hex } from '../../src/xva/xxhash64.js'

const VECTORS: [number, string][] = [
  [0, 'EF46DB3751D8E999'], [1, 'A96C7F0CE858BBB7'], [3, 'BED43740EE6332BB'], [4, 'FA212AE44B3BB23D'],
  [7, '2744460DD675D2C0'], [8, '994B676B71CE94DD'], [31, '6711D55E306B5D8F'], [32, '07F7B8E3BC5D6E25'],
  [33, '09F85EEB4E1CBE9F'], [100, '9DDADA11D3DC2D8F'], [1048576, '1B13A8085220794B'],
]

const data = (n: number) => {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i * 131 + 7) & 255
  return b
}

describe('xxh64Hex', () => {
  it.each(VECTORS)('matches libxxhash for %i bytes', (n, expected) => {
    expect(xxh64Hex(data(n))).toBe(expected)
  })
  it('gives the same digest for an unaligned view of the same bytes', () => {
    const backing = Buffer.alloc(1048576 + 3)
    data(1048576).copy(backing, 3)
    expect(xxh64Hex(backing.subarray(3))).toBe('1B13A8085220794B')
  })
})

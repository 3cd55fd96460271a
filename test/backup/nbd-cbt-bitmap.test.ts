/**
 * The changed-block list of a CBT delta (nbd-source.ts changedBlockIndexes): XAPI's base64 bitmap of
 * 64 KiB blocks, most significant bit first, turned into the 2 MiB VHD blocks to read — any of a
 * block's 32 bits marks it, a disk that is not a whole number of 2 MiB blocks has a short last group,
 * and a bitmap of another length than the disk's is E_CBT.
 */
import { expect, it } from 'vitest'
import { changedBlockIndexes } from '../../src/backup/nbd-source.js'

const KiB = 1024
const MiB = 1024 * KiB

/** A bitmap with the given 64 KiB bits set, for a disk of `size` bytes. */
function bitmap(size: number, bits: number[]): string {
  const b = Buffer.alloc(Math.ceil(size / (64 * KiB) / 8))
  for (const i of bits) b[i >> 3]! |= 0x80 >> (i & 7)
  return b.toString('base64')
}

it('marks a 2 MiB block when any of its 32 bits of 64 KiB is set', () => {
  const size = 16 * MiB // 8 blocks, 256 bits
  expect(changedBlockIndexes(bitmap(size, []), size)).toEqual([])
  // block 0 by its first bit, block 2 by its last (bit 95), block 7 by a middle one
  expect(changedBlockIndexes(bitmap(size, [0, 95, 7 * 32 + 17]), size)).toEqual([0, 2, 7])
  expect(changedBlockIndexes(bitmap(size, [...Array(256).keys()]), size)).toEqual([...Array(8).keys()])
})

it('reads the short last group of a disk that is not a whole number of 2 MiB blocks', () => {
  // 4 MiB + 192 KiB: 2 whole blocks and a third of 3 bits (1 byte of bitmap)
  const size = 4 * MiB + 192 * KiB
  expect(changedBlockIndexes(bitmap(size, [66]), size)).toEqual([2])
  expect(changedBlockIndexes(bitmap(size, [31, 64]), size)).toEqual([0, 2])
  expect(changedBlockIndexes(bitmap(size, [32]), size)).toEqual([1])
})

it('refuses a bitmap whose length is not the disk’s (E_CBT)', () => {
  const size = 16 * MiB
  const short = Buffer.from(bitmap(size, [1]), 'base64').subarray(1).toString('base64')
  let error: unknown
  try {
    changedBlockIndexes(short, size)
  } catch (e) {
    error = e
  }
  expect(error).toMatchObject({ code: 'E_CBT', fields: { got: 31, expected: 32 } })
})

/**
 * Sector bitmaps: each block starts with one bit per sector (MSB first, padded to whole sectors) telling
 * whether the sector holds data. XAPI and XO write whole blocks with all bits set; readers honour the
 * bits (a clear bit reads as the parent's sector, or zeros without a parent).
 */
import { SECTOR_SIZE, bitmapSizeBytes } from './constants.js'

export function sectorIsSet(bitmap: Uint8Array, sector: number): boolean {
  return (((bitmap[sector >> 3] ?? 0) << (sector & 7)) & 0x80) !== 0
}

/** A bitmap with every sector of a block set. */
export function fullBitmap(blockSizeBytes: number): Buffer {
  const buf = Buffer.alloc(bitmapSizeBytes(blockSizeBytes))
  buf.fill(0xff, 0, Math.ceil(blockSizeBytes / SECTOR_SIZE / 8))
  return buf
}

/** True when every sector of the block is marked present. */
export function bitmapIsFull(bitmap: Uint8Array, blockSizeBytes: number): boolean {
  const sectors = blockSizeBytes / SECTOR_SIZE
  const whole = sectors >> 3
  for (let i = 0; i < whole; i++) if (bitmap[i] !== 0xff) return false
  for (let s = whole * 8; s < sectors; s++) if (!sectorIsSet(bitmap, s)) return false
  return true
}

/**
 * The Block Allocation Table: codec (big-endian u32 sector offsets, 0xFFFFFFFF = absent) and the
 * layout check every reader runs before touching block data: every present entry belongs to the
 * virtual disk, no block, BAT or locator overlaps another or the header, and (when the file size is
 * known) everything ends before the trailing footer.
 *
 * Also the VhdDirectory form of the BAT: a bit array (MSB first, 1 = block present), as vhd-lib writes it
 * (one byte per entry is allocated there, only the bits are meaningful).
 */
import { BLOCK_UNUSED, FOOTER_SIZE, HEADER_SIZE, SECTOR_SIZE, batSizeBytes, bitmapSizeBytes, blockCount } from './constants.js'
import { corrupt } from './corrupt.js'
import type { VhdFooter } from './footer.js'
import type { VhdHeader } from './header.js'

export function decodeBat(buf: Buffer, entries: number, baseOffset: number): Uint32Array {
  if (buf.length < entries * 4) throw corrupt('bat', 'length', baseOffset, `BAT is ${buf.length} bytes, ${entries} entries need ${entries * 4}`)
  const bat = new Uint32Array(entries)
  for (let i = 0; i < entries; i++) bat[i] = buf.readUInt32BE(i * 4)
  return bat
}

export function encodeBat(bat: Uint32Array): Buffer {
  const buf = Buffer.alloc(batSizeBytes(bat.length), 0xff)
  for (let i = 0; i < bat.length; i++) buf.writeUInt32BE(bat[i] ?? BLOCK_UNUSED, i * 4)
  return buf
}

/** One region of a VhdFile after the header: the BAT, a parent locator's data, or a block. */
export interface LayoutItem {
  kind: 'bat' | 'locator' | 'block'
  /** block index or locator slot; 0 for the BAT */
  index: number
  offset: number
  sizeBytes: number
}

/**
 * Orders and validates the regions of a dynamic/differencing VHD by offset. Throws VhdCorruptError on
 * BAT entries past the disk, overlaps, or regions past `fileSizeBytes` (when given: data must end
 * before the trailing footer).
 */
export function planLayout(footer: VhdFooter, header: VhdHeader, bat: Uint32Array, fileSizeBytes?: number): LayoutItem[] {
  const headerOffset = footer.dataOffset ?? FOOTER_SIZE
  const nBlocks = blockCount(footer.currentSizeBytes, header.blockSizeBytes)
  const fullBlock = bitmapSizeBytes(header.blockSizeBytes) + header.blockSizeBytes
  const items: LayoutItem[] = [{ kind: 'bat', index: 0, offset: header.tableOffset, sizeBytes: header.maxTableEntries * 4 }]
  header.parentLocators.forEach((entry, i) => {
    if (entry.platformCode !== 0 && entry.platformDataLength > 0 && entry.platformDataOffset > 0) {
      items.push({ kind: 'locator', index: i, offset: entry.platformDataOffset, sizeBytes: entry.platformDataLength })
    }
  })
  for (let i = 0; i < bat.length; i++) {
    const entry = bat[i] ?? BLOCK_UNUSED
    if (entry === BLOCK_UNUSED) continue
    if (i >= nBlocks) throw corrupt('bat', `entry[${i}]`, header.tableOffset + i * 4, `block ${i} is allocated but the disk has only ${nBlocks} blocks`)
    items.push({ kind: 'block', index: i, offset: entry * SECTOR_SIZE, sizeBytes: fullBlock })
  }
  items.sort((a, b) => a.offset - b.offset)
  let end = headerOffset + HEADER_SIZE
  let previous = 'the header'
  for (const item of items) {
    const name = item.kind === 'block' ? `block ${item.index}` : item.kind === 'bat' ? 'the BAT' : `parent locator ${item.index}`
    const field = item.kind === 'block' ? `entry[${item.index}]` : item.kind === 'bat' ? 'tableOffset' : `parentLocators[${item.index}].platformDataOffset`
    const where = item.kind === 'block' ? header.tableOffset + item.index * 4 : headerOffset + (item.kind === 'bat' ? 16 : 576 + item.index * 24 + 16)
    const structure = item.kind === 'block' ? 'bat' : item.kind === 'bat' ? 'header' : 'locator'
    if (item.offset < end) throw corrupt(structure, field, where, `${name} at byte ${item.offset} overlaps ${previous} (which ends at byte ${end})`)
    end = item.offset + item.sizeBytes
    previous = name
    if (fileSizeBytes !== undefined && end > fileSizeBytes - FOOTER_SIZE) {
      throw corrupt(structure, field, where, `${name} ends at byte ${end}, past the end of the data (file is ${fileSizeBytes} bytes, footer included)`)
    }
  }
  return items
}

/** VhdDirectory BAT (bit array) from the present-block predicate. */
export function encodeDirectoryBat(entries: number, isPresent: (index: number) => boolean): Buffer {
  // vhd-lib allocates one byte per entry and uses the leading bits: keep its size for compatibility
  const buf = Buffer.alloc(Math.max(entries, Math.ceil(entries / 8)))
  for (let i = 0; i < entries; i++) if (isPresent(i)) buf[i >> 3] = (buf[i >> 3] ?? 0) | (0x80 >> (i & 7))
  return buf
}

export function directoryBatHas(bat: Uint8Array, index: number): boolean {
  return (((bat[index >> 3] ?? 0) << (index & 7)) & 0x80) !== 0
}

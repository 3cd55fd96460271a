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

/** One region of a VhdFile after the header other than a block: the BAT or a parent locator's data. */
export interface LayoutItem {
  kind: 'bat' | 'locator'
  /** locator slot; 0 for the BAT */
  index: number
  offset: number
  sizeBytes: number
}

/**
 * The regions of a VhdFile by offset, kept compact: a disk has up to a million blocks, and an object per
 * block (with its offset boxed past 2 GiB) cost a stream thread ~100 bytes of V8 heap per block, held
 * for the whole export (the backup-rss bench's peak grew ~20 MiB from 1 to 64 GiB disks with it).
 */
export interface VhdLayout {
  /** the BAT and the parent locators' data, by offset */
  others: LayoutItem[]
  /** present blocks' BAT indexes, by offset */
  blockIndexes: Uint32Array
  /** their byte offsets (same order) */
  blockOffsets: Float64Array
  /** bitmap + data bytes of a block */
  blockBytes: number
}

/** Present blocks' indexes sorted by offset (an export's are in order already: no sort then). */
function blocksByOffset(bat: Uint32Array, nBlocks: number, tableOffset: number): Uint32Array {
  let count = 0
  for (let i = 0; i < bat.length; i++) {
    if (bat[i] === BLOCK_UNUSED) continue
    if (i >= nBlocks) throw corrupt('bat', `entry[${i}]`, tableOffset + i * 4, `block ${i} is allocated but the disk has only ${nBlocks} blocks`)
    count++
  }
  const indexes = new Uint32Array(count)
  let sorted = true
  for (let i = 0, n = 0; i < bat.length; i++) {
    if (bat[i] === BLOCK_UNUSED) continue
    if (n > 0 && (bat[indexes[n - 1] as number] as number) > (bat[i] as number)) sorted = false
    indexes[n++] = i
  }
  if (!sorted) indexes.sort((a, b) => (bat[a] as number) - (bat[b] as number) || a - b)
  return indexes
}

/**
 * Orders and validates the regions of a dynamic/differencing VHD by offset. Throws VhdCorruptError on
 * BAT entries past the disk, overlaps, or regions past `fileSizeBytes` (when given: data must end
 * before the trailing footer).
 */
export function planLayout(footer: VhdFooter, header: VhdHeader, bat: Uint32Array, fileSizeBytes?: number): VhdLayout {
  const nBlocks = blockCount(footer.currentSizeBytes, header.blockSizeBytes)
  const blockBytes = bitmapSizeBytes(header.blockSizeBytes) + header.blockSizeBytes
  const others: LayoutItem[] = [{ kind: 'bat', index: 0, offset: header.tableOffset, sizeBytes: header.maxTableEntries * 4 }]
  header.parentLocators.forEach((entry, i) => {
    if (entry.platformCode !== 0 && entry.platformDataLength > 0 && entry.platformDataOffset > 0) {
      others.push({ kind: 'locator', index: i, offset: entry.platformDataOffset, sizeBytes: entry.platformDataLength })
    }
  })
  others.sort((a, b) => a.offset - b.offset)
  const blockIndexes = blocksByOffset(bat, nBlocks, header.tableOffset)
  const blockOffsets = new Float64Array(blockIndexes.length)
  for (let n = 0; n < blockIndexes.length; n++) blockOffsets[n] = (bat[blockIndexes[n] as number] as number) * SECTOR_SIZE
  const layout = { others, blockIndexes, blockOffsets, blockBytes }
  checkLayout(layout, footer, header, fileSizeBytes)
  return layout
}

/** Regions in order (the BAT and locators before a block at the same offset, as a stable sort of all). */
function checkLayout(layout: VhdLayout, footer: VhdFooter, header: VhdHeader, fileSizeBytes: number | undefined): void {
  const headerOffset = footer.dataOffset ?? FOOTER_SIZE
  const { others, blockIndexes, blockOffsets, blockBytes } = layout
  let end = headerOffset + HEADER_SIZE
  let previous = 'the header'
  let o = 0
  for (let b = 0; b <= blockIndexes.length; ) {
    const other = others[o]
    const isBlock = b < blockIndexes.length && (other === undefined || (blockOffsets[b] as number) < other.offset)
    if (!isBlock && other === undefined) break
    const index = isBlock ? (blockIndexes[b] as number) : (other as LayoutItem).index
    const offset = isBlock ? (blockOffsets[b] as number) : (other as LayoutItem).offset
    const kind = isBlock ? 'block' : (other as LayoutItem).kind
    const name = kind === 'block' ? `block ${index}` : kind === 'bat' ? 'the BAT' : `parent locator ${index}`
    const field = kind === 'block' ? `entry[${index}]` : kind === 'bat' ? 'tableOffset' : `parentLocators[${index}].platformDataOffset`
    const where = kind === 'block' ? header.tableOffset + index * 4 : headerOffset + (kind === 'bat' ? 16 : 576 + index * 24 + 16)
    const structure = kind === 'block' ? 'bat' : kind === 'bat' ? 'header' : 'locator'
    if (offset < end) throw corrupt(structure, field, where, `${name} at byte ${offset} overlaps ${previous} (which ends at byte ${end})`)
    end = offset + (isBlock ? blockBytes : (other as LayoutItem).sizeBytes)
    previous = name
    if (fileSizeBytes !== undefined && end > fileSizeBytes - FOOTER_SIZE) {
      throw corrupt(structure, field, where, `${name} ends at byte ${end}, past the end of the data (file is ${fileSizeBytes} bytes, footer included)`)
    }
    if (isBlock) b++
    else o++
  }
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

/**
 * A tiny, self-contained VHD encoder for the simulator: footer, dynamic/differencing header, BAT and the
 * block bitmap, laid out the way XAPI's `export_raw_vdi?format=vhd` streams them (footer copy, header,
 * BAT, then the present blocks in BAT order, then the footer). It is deliberately independent of
 * src/vhd (the production codecs) so that the simulator is a second, separate implementation: a bug in
 * one cannot hide the same bug in the other.
 *
 * Big-endian everywhere; checksums are the one's complement of the byte sum with the checksum zeroed.
 * Creator application is `tap\0` (XenServer), so qemu-img uses the footer's current size, not CHS.
 */
import { computeGeometry } from '../../vhd/footer.js'

export const SECTOR_BYTES = 512
export const VHD_BLOCK_BYTES = 2 * 1024 * 1024
/** One 2 MiB block has 4096 sectors: its bitmap is 512 bytes, already sector-aligned. */
const BITMAP_BYTES = VHD_BLOCK_BYTES / SECTOR_BYTES / 8
const FOOTER_BYTES = 512
const HEADER_BYTES = 1024

const DISK_TYPE_DYNAMIC = 3
const DISK_TYPE_DIFFERENCING = 4
/** Seconds between the Unix epoch and the VHD epoch (2000-01-01T00:00:00Z). */
const VHD_EPOCH_S = 946_684_800

function checksum(buf: Buffer, checksumOffset: number): number {
  let sum = 0
  for (let i = 0; i < buf.length; i++) {
    if (i < checksumOffset || i >= checksumOffset + 4) sum += buf[i] ?? 0
  }
  return ~sum >>> 0
}

/** 16 bytes from a UUID string (`xxxxxxxx-xxxx-...`). */
function uuidBytes(uuid: string): Buffer {
  const hex = uuid.replace(/-/g, '')
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw new RangeError(`not a UUID: ${uuid}`)
  return Buffer.from(hex, 'hex')
}

interface VhdLayoutOptions {
  virtualSizeBytes: number
  /** UUID of this disk (the VHD unique id) */
  uniqueId: string
  /** modification time of this disk, Unix ms */
  timestampMs: number
  /** present for a differencing VHD: the parent's unique id, timestamp and name */
  parent?: { uniqueId: string; timestampMs: number; name: string }
  /** block indexes present in the stream, ascending */
  blocks: readonly number[]
}

interface VhdLayout {
  /** footer + header + BAT, to send first */
  head: Buffer
  /** the footer again, to send last */
  footer: Buffer
  /** full stream length in bytes */
  totalBytes: number
  /** byte offset of block i (in `blocks` order) in the stream */
  blockOffset: (i: number) => number
}

function vhdTimestamp(ms: number): number {
  return Math.max(0, Math.floor(ms / 1000) - VHD_EPOCH_S) >>> 0
}

function encodeFooter(options: { virtualSizeBytes: number; uniqueId: string; timestampMs: number; diskType: number }): Buffer {
  const b = Buffer.alloc(FOOTER_BYTES)
  b.write('conectix', 0, 'latin1')
  b.writeUInt32BE(2, 8) // features: reserved bit always set
  b.writeUInt32BE(0x00010000, 12)
  b.writeBigUInt64BE(BigInt(FOOTER_BYTES), 16) // data offset: the dynamic header follows the footer copy
  b.writeUInt32BE(vhdTimestamp(options.timestampMs), 24)
  b.write('tap\0', 28, 'latin1')
  b.writeUInt32BE(0x00010003, 32)
  b.write('Wi2k', 36, 'latin1')
  b.writeBigUInt64BE(BigInt(options.virtualSizeBytes), 40)
  b.writeBigUInt64BE(BigInt(options.virtualSizeBytes), 48)
  const chs = computeGeometry(options.virtualSizeBytes) // the engine's own: one CHS calculation
  b.writeUInt16BE(chs.cylinders, 56)
  b.writeUInt8(chs.heads, 58)
  b.writeUInt8(chs.sectorsPerTrack, 59)
  b.writeUInt32BE(options.diskType, 60)
  uuidBytes(options.uniqueId).copy(b, 68)
  b.writeUInt32BE(checksum(b, 64), 64)
  return b
}

function encodeHeader(options: { maxTableEntries: number; batOffset: number; parent?: VhdLayoutOptions['parent'] }): Buffer {
  const b = Buffer.alloc(HEADER_BYTES)
  b.write('cxsparse', 0, 'latin1')
  b.writeBigUInt64BE(0xffffffffffffffffn, 8)
  b.writeBigUInt64BE(BigInt(options.batOffset), 16)
  b.writeUInt32BE(0x00010000, 24)
  b.writeUInt32BE(options.maxTableEntries, 28)
  b.writeUInt32BE(VHD_BLOCK_BYTES, 32)
  if (options.parent !== undefined) {
    uuidBytes(options.parent.uniqueId).copy(b, 40)
    b.writeUInt32BE(vhdTimestamp(options.parent.timestampMs), 56)
    const name = Buffer.from(options.parent.name, 'utf16le').swap16() // UTF-16 big-endian
    name.copy(b, 64, 0, Math.min(name.length, 512))
  }
  b.writeUInt32BE(checksum(b, 36), 36)
  return b
}

/** Computes the head (footer, header, BAT) and the trailing footer of a dynamic or differencing VHD. */
export function vhdLayout(options: VhdLayoutOptions): VhdLayout {
  const maxTableEntries = Math.ceil(options.virtualSizeBytes / VHD_BLOCK_BYTES)
  const batOffset = FOOTER_BYTES + HEADER_BYTES
  const batBytes = Math.ceil((maxTableEntries * 4) / SECTOR_BYTES) * SECTOR_BYTES
  const firstBlock = batOffset + batBytes
  const blockStride = BITMAP_BYTES + VHD_BLOCK_BYTES
  const footer = encodeFooter({
    virtualSizeBytes: options.virtualSizeBytes,
    uniqueId: options.uniqueId,
    timestampMs: options.timestampMs,
    diskType: options.parent === undefined ? DISK_TYPE_DYNAMIC : DISK_TYPE_DIFFERENCING,
  })
  const header = encodeHeader({ maxTableEntries, batOffset, ...(options.parent === undefined ? {} : { parent: options.parent }) })
  const head = Buffer.alloc(firstBlock, 0xff) // absent BAT entries are 0xFFFFFFFF (also fills the BAT padding)
  footer.copy(head, 0)
  header.copy(head, FOOTER_BYTES)
  let previous = -1
  options.blocks.forEach((block, i) => {
    if (block <= previous || block >= maxTableEntries) throw new RangeError(`block ${block} is out of order or beyond ${maxTableEntries} blocks`)
    previous = block
    head.writeUInt32BE((firstBlock + i * blockStride) / SECTOR_BYTES, batOffset + block * 4)
  })
  return {
    head,
    footer,
    totalBytes: firstBlock + options.blocks.length * blockStride + FOOTER_BYTES,
    blockOffset: (i) => firstBlock + i * blockStride,
  }
}

/** Bitmap of a fully present block: every sector is in this VHD (XAPI writes whole blocks). */
export const FULL_BITMAP: Buffer = Buffer.alloc(BITMAP_BYTES, 0xff)

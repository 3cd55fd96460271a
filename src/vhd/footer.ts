/**
 * The 512-byte VHD footer (hard disk footer): codec and validation.
 *
 * Layout (big-endian): cookie "conectix" @0, features @8, format version @12, data offset (u64, the
 * dynamic header's offset; all ones for fixed disks) @16, timestamp (s since 2000-01-01) @24, creator
 * application @28, creator version @32, creator host OS @36, original size @40, current size @48,
 * geometry (cylinders u16, heads u8, sectors/track u8) @56, disk type @60, checksum @64, unique id
 * @68, saved state @84, reserved (zero) @85..511.
 *
 * `decodeFooter` validates every field and throws `VhdCorruptError` naming the field and its absolute
 * offset (`baseOffset` + field offset); `encodeFooter` recomputes the checksum.
 */
import { vhdChecksum } from './checksum.js'
import {
  CREATOR_APPLICATION,
  DISK_TYPES,
  FEATURES_RESERVED,
  FILE_FORMAT_VERSION,
  FOOTER_COOKIE,
  FOOTER_SIZE,
  HEADER_SIZE,
  MAX_VIRTUAL_SIZE,
  SECTOR_SIZE,
  VHD_EPOCH_OFFSET_S,
  type DiskType,
} from './constants.js'
import { corrupt } from './corrupt.js'
import { newUuid, uuidFromBytes, uuidToBytes } from './uuid.js'

interface DiskGeometry {
  cylinders: number
  heads: number
  sectorsPerTrack: number
}

export interface VhdFooter {
  features: number
  fileFormatVersion: number
  /** offset of the dynamic header; null for fixed disks (all ones on disk) */
  dataOffset: number | null
  /** seconds since 2000-01-01T00:00:00Z */
  timestamp: number
  creatorApplication: string
  creatorVersion: number
  creatorHostOs: number
  originalSizeBytes: number
  currentSizeBytes: number
  geometry: DiskGeometry
  diskType: DiskType
  checksum: number
  uuid: string
  savedState: number
}

const CHECKSUM_OFFSET = 64

function readU64(buf: Buffer, offset: number): number | null {
  const hi = buf.readUInt32BE(offset)
  const lo = buf.readUInt32BE(offset + 4)
  if (hi === 0xffffffff && lo === 0xffffffff) return null
  return hi * 2 ** 32 + lo
}

function writeU64(buf: Buffer, offset: number, value: number | null): void {
  if (value === null) {
    buf.writeUInt32BE(0xffffffff, offset)
    buf.writeUInt32BE(0xffffffff, offset + 4)
    return
  }
  buf.writeUInt32BE(Math.floor(value / 2 ** 32), offset)
  buf.writeUInt32BE(value % 2 ** 32, offset + 4)
}
export { readU64, writeU64 }

/**
 * Decodes and validates a footer. `baseOffset` is where the footer sits in its file or stream, used in
 * error offsets. `allowFixed` accepts disk type 2 (fixed), which streams from XAPI never are.
 */
export function decodeFooter(buf: Buffer, baseOffset = 0, options: { allowFixed?: boolean } = {}): VhdFooter {
  if (buf.length < FOOTER_SIZE) throw corrupt('footer', 'length', baseOffset, `footer is ${buf.length} bytes, expected ${FOOTER_SIZE}`)
  const cookie = buf.toString('latin1', 0, 8)
  if (cookie !== FOOTER_COOKIE) throw corrupt('footer', 'cookie', baseOffset, `cookie is ${JSON.stringify(cookie)}, expected "${FOOTER_COOKIE}"`)
  const stored = buf.readUInt32BE(CHECKSUM_OFFSET)
  const computed = vhdChecksum(buf.subarray(0, FOOTER_SIZE), CHECKSUM_OFFSET)
  if (stored !== computed) throw corrupt('footer', 'checksum', baseOffset + CHECKSUM_OFFSET, `checksum is 0x${stored.toString(16)}, computed 0x${computed.toString(16)}`)
  const features = buf.readUInt32BE(8)
  const fileFormatVersion = buf.readUInt32BE(12)
  if (fileFormatVersion !== FILE_FORMAT_VERSION) throw corrupt('footer', 'fileFormatVersion', baseOffset + 12, `version is 0x${fileFormatVersion.toString(16)}, expected 0x00010000`)
  const diskTypeRaw = buf.readUInt32BE(60)
  if (diskTypeRaw !== DISK_TYPES.DYNAMIC && diskTypeRaw !== DISK_TYPES.DIFFERENCING && !(options.allowFixed === true && diskTypeRaw === DISK_TYPES.FIXED)) {
    throw corrupt('footer', 'diskType', baseOffset + 60, `disk type is ${diskTypeRaw}, expected 3 (dynamic) or 4 (differencing)`)
  }
  const diskType: DiskType = diskTypeRaw
  const dataOffset = readU64(buf, 16)
  if (diskType === DISK_TYPES.FIXED) {
    if (dataOffset !== null) throw corrupt('footer', 'dataOffset', baseOffset + 16, `a fixed disk has data offset ${dataOffset}, expected none (all ones)`)
  } else if (dataOffset === null || dataOffset % SECTOR_SIZE !== 0 || dataOffset < FOOTER_SIZE || dataOffset > Number.MAX_SAFE_INTEGER - HEADER_SIZE) {
    throw corrupt('footer', 'dataOffset', baseOffset + 16, `header offset is ${dataOffset ?? 'none'}, expected a sector-aligned offset after the footer`)
  }
  const originalSizeBytes = readU64(buf, 40) ?? -1
  const currentSizeBytes = readU64(buf, 48) ?? -1
  if (currentSizeBytes <= 0 || currentSizeBytes > MAX_VIRTUAL_SIZE) {
    throw corrupt('footer', 'currentSize', baseOffset + 48, `virtual size is ${currentSizeBytes}, expected 1 byte to 2040 GiB`)
  }
  if (originalSizeBytes < 0 || originalSizeBytes > MAX_VIRTUAL_SIZE) {
    throw corrupt('footer', 'originalSize', baseOffset + 40, `original size is ${originalSizeBytes}, expected 0 to 2040 GiB`)
  }
  const savedState = buf.readUInt8(84)
  if (savedState > 1) throw corrupt('footer', 'savedState', baseOffset + 84, `saved state is ${savedState}, expected 0 or 1`)
  return {
    features,
    fileFormatVersion,
    dataOffset,
    timestamp: buf.readUInt32BE(24),
    creatorApplication: buf.toString('latin1', 28, 32),
    creatorVersion: buf.readUInt32BE(32),
    creatorHostOs: buf.readUInt32BE(36),
    originalSizeBytes,
    currentSizeBytes,
    geometry: { cylinders: buf.readUInt16BE(56), heads: buf.readUInt8(58), sectorsPerTrack: buf.readUInt8(59) },
    diskType,
    checksum: stored,
    uuid: uuidFromBytes(buf.subarray(68, 84)),
    savedState,
  }
}

/** Encodes a footer into 512 bytes with a fresh checksum (the `checksum` field is ignored and updated). */
export function encodeFooter(footer: VhdFooter): Buffer {
  const buf = Buffer.alloc(FOOTER_SIZE)
  buf.write(FOOTER_COOKIE, 0, 'latin1')
  buf.writeUInt32BE(footer.features, 8)
  buf.writeUInt32BE(footer.fileFormatVersion, 12)
  writeU64(buf, 16, footer.dataOffset)
  buf.writeUInt32BE(footer.timestamp >>> 0, 24)
  buf.write(footer.creatorApplication.padEnd(4, ' ').slice(0, 4), 28, 'latin1')
  buf.writeUInt32BE(footer.creatorVersion >>> 0, 32)
  buf.writeUInt32BE(footer.creatorHostOs >>> 0, 36)
  writeU64(buf, 40, footer.originalSizeBytes)
  writeU64(buf, 48, footer.currentSizeBytes)
  buf.writeUInt16BE(footer.geometry.cylinders, 56)
  buf.writeUInt8(footer.geometry.heads, 58)
  buf.writeUInt8(footer.geometry.sectorsPerTrack, 59)
  buf.writeUInt32BE(footer.diskType, 60)
  uuidToBytes(footer.uuid, buf, 68)
  buf.writeUInt8(footer.savedState, 84)
  const checksum = vhdChecksum(buf, CHECKSUM_OFFSET)
  buf.writeUInt32BE(checksum, CHECKSUM_OFFSET)
  footer.checksum = checksum
  return buf
}

/** CHS geometry for a size, as the specification's appendix computes it. */
export function computeGeometry(sizeBytes: number): DiskGeometry {
  const totalSectors = Math.min(Math.ceil(sizeBytes / SECTOR_SIZE), 65535 * 16 * 255)
  let sectorsPerTrack: number
  let heads: number
  let cylinderTimesHeads: number
  if (totalSectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255
    heads = 16
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack)
  } else {
    sectorsPerTrack = 17
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack)
    heads = Math.max(4, Math.floor((cylinderTimesHeads + 1023) / 1024))
    if (cylinderTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31
      heads = 16
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack)
    }
    if (cylinderTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63
      heads = 16
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack)
    }
  }
  return { cylinders: Math.min(65535, Math.floor(cylinderTimesHeads / heads)), heads, sectorsPerTrack }
}

/** VHD timestamp (seconds since 2000-01-01) of a Date. */
export function vhdTimestamp(date: Date = new Date()): number {
  return Math.max(0, Math.floor(date.getTime() / 1000) - VHD_EPOCH_OFFSET_S) >>> 0
}

/** A fresh footer for a dynamic (or differencing) disk, as XO writes it. */
export function createFooter(options: { currentSizeBytes: number; diskType?: DiskType; uuid?: string; timestamp?: number }): VhdFooter {
  return {
    features: FEATURES_RESERVED,
    fileFormatVersion: FILE_FORMAT_VERSION,
    dataOffset: FOOTER_SIZE,
    timestamp: options.timestamp ?? vhdTimestamp(),
    creatorApplication: CREATOR_APPLICATION,
    creatorVersion: 0,
    creatorHostOs: 0x5769326b,
    originalSizeBytes: options.currentSizeBytes,
    currentSizeBytes: options.currentSizeBytes,
    geometry: computeGeometry(options.currentSizeBytes),
    diskType: options.diskType ?? DISK_TYPES.DYNAMIC,
    checksum: 0,
    uuid: options.uuid ?? newUuid(),
    savedState: 0,
  }
}

/**
 * The 1024-byte dynamic disk header ("cxsparse") and its 8 parent locator entries: codec and
 * validation.
 *
 * Layout (big-endian): cookie @0, data offset (u64, all ones) @8, table (BAT) offset (u64) @16,
 * header version @24, max table entries @28, block size @32, checksum @36, parent unique id @40,
 * parent timestamp @56, reserved @60, parent unicode name (UTF-16BE, 512 bytes) @64, 8 parent locator
 * entries of 24 bytes @576 (platform code, data space, data length, reserved, data offset u64),
 * reserved @768.
 *
 * `platformDataSpace` is in sectors per the specification, but some writers store bytes; we never rely
 * on it for bounds (the data length is what is read) and write sectors as XO does.
 */
import { vhdChecksum } from './checksum.js'
import { DEFAULT_BLOCK_SIZE, DISK_TYPES, FOOTER_SIZE, HEADER_COOKIE, HEADER_SIZE, HEADER_VERSION, KNOWN_PLATFORM_CODES, PARENT_LOCATOR_ENTRIES, PLATFORMS, SECTOR_SIZE, blockCount } from './constants.js'
import { corrupt } from './corrupt.js'
import { readU64, writeU64, type VhdFooter } from './footer.js'
import { NULL_UUID, uuidFromBytes, uuidToBytes } from './uuid.js'

interface ParentLocatorEntry {
  platformCode: number
  /** declared space (sectors per the spec) */
  platformDataSpace: number
  platformDataLength: number
  platformDataOffset: number
}

export interface VhdHeader {
  tableOffset: number
  headerVersion: number
  maxTableEntries: number
  blockSizeBytes: number
  checksum: number
  parentUuid: string
  parentTimestamp: number
  parentUnicodeName: string
  parentLocators: ParentLocatorEntry[]
}

const CHECKSUM_OFFSET = 36
const LOCATORS_OFFSET = 576
/** BAT entries of the largest disk (2040 GiB in 512-byte blocks) — more is certainly garbage */
const MAX_TABLE_ENTRIES = 2040 * 2 * 1024 * 1024 * 2

export function emptyLocator(): ParentLocatorEntry {
  return { platformCode: PLATFORMS.NONE, platformDataSpace: 0, platformDataLength: 0, platformDataOffset: 0 }
}

function decodeUtf16Be(buf: Buffer): string {
  let end = 0
  while (end + 1 < buf.length && (buf[end] !== 0 || buf[end + 1] !== 0)) end += 2
  const swapped = Buffer.from(buf.subarray(0, end))
  swapped.swap16()
  return swapped.toString('utf16le')
}

/**
 * Decodes and validates a dynamic header. With `footer`, also checks the BAT covers the virtual size
 * and a differencing disk names its parent. `baseOffset` is where the header sits (for error offsets).
 */
export function decodeHeader(buf: Buffer, baseOffset: number, footer?: VhdFooter): VhdHeader {
  if (buf.length < HEADER_SIZE) throw corrupt('header', 'length', baseOffset, `header is ${buf.length} bytes, expected ${HEADER_SIZE}`)
  const cookie = buf.toString('latin1', 0, 8)
  if (cookie !== HEADER_COOKIE) throw corrupt('header', 'cookie', baseOffset, `cookie is ${JSON.stringify(cookie)}, expected "${HEADER_COOKIE}"`)
  const stored = buf.readUInt32BE(CHECKSUM_OFFSET)
  const computed = vhdChecksum(buf.subarray(0, HEADER_SIZE), CHECKSUM_OFFSET)
  if (stored !== computed) throw corrupt('header', 'checksum', baseOffset + CHECKSUM_OFFSET, `checksum is 0x${stored.toString(16)}, computed 0x${computed.toString(16)}`)
  const dataOffset = readU64(buf, 8)
  if (dataOffset !== null) throw corrupt('header', 'dataOffset', baseOffset + 8, `data offset is ${dataOffset}, expected none (all ones)`)
  const tableOffset = readU64(buf, 16) ?? -1
  if (tableOffset < FOOTER_SIZE + HEADER_SIZE || tableOffset % SECTOR_SIZE !== 0 || tableOffset > Number.MAX_SAFE_INTEGER / 2) {
    throw corrupt('header', 'tableOffset', baseOffset + 16, `BAT offset is ${tableOffset}, expected a sector-aligned offset after the header`)
  }
  const headerVersion = buf.readUInt32BE(24)
  if (headerVersion !== HEADER_VERSION) throw corrupt('header', 'headerVersion', baseOffset + 24, `version is 0x${headerVersion.toString(16)}, expected 0x00010000`)
  const maxTableEntries = buf.readUInt32BE(28)
  if (maxTableEntries === 0 || maxTableEntries > MAX_TABLE_ENTRIES) throw corrupt('header', 'maxTableEntries', baseOffset + 28, `BAT has ${maxTableEntries} entries`)
  const blockSizeBytes = buf.readUInt32BE(32)
  if (blockSizeBytes < SECTOR_SIZE || (blockSizeBytes & (blockSizeBytes - 1)) !== 0 || blockSizeBytes > 256 * 1024 * 1024) {
    throw corrupt('header', 'blockSize', baseOffset + 32, `block size is ${blockSizeBytes}, expected a power of two from 512 B to 256 MiB (usually 2 MiB)`)
  }
  const parentUuid = uuidFromBytes(buf.subarray(40, 56))
  const parentLocators: ParentLocatorEntry[] = []
  for (let i = 0; i < PARENT_LOCATOR_ENTRIES; i++) {
    const at = LOCATORS_OFFSET + i * 24
    const entry: ParentLocatorEntry = {
      platformCode: buf.readUInt32BE(at),
      platformDataSpace: buf.readUInt32BE(at + 4),
      platformDataLength: buf.readUInt32BE(at + 8),
      platformDataOffset: readU64(buf, at + 16) ?? -1,
    }
    if (!KNOWN_PLATFORM_CODES.has(entry.platformCode)) {
      throw corrupt('locator', `parentLocators[${i}].platformCode`, baseOffset + at, `platform code is 0x${entry.platformCode.toString(16)}, not one the specification defines`)
    }
    if (entry.platformCode !== PLATFORMS.NONE && entry.platformDataLength > 0) {
      if (entry.platformDataLength > 64 * 1024) {
        throw corrupt('locator', `parentLocators[${i}].platformDataLength`, baseOffset + at + 8, `locator data is ${entry.platformDataLength} bytes, at most 64 KiB is sane`)
      }
      if (entry.platformDataOffset < 0 || entry.platformDataOffset > Number.MAX_SAFE_INTEGER / 2) {
        throw corrupt('locator', `parentLocators[${i}].platformDataOffset`, baseOffset + at + 16, `locator data offset is ${entry.platformDataOffset}`)
      }
    }
    parentLocators.push(entry)
  }
  const header: VhdHeader = {
    tableOffset,
    headerVersion,
    maxTableEntries,
    blockSizeBytes,
    checksum: stored,
    parentUuid,
    parentTimestamp: buf.readUInt32BE(56),
    parentUnicodeName: decodeUtf16Be(buf.subarray(64, 576)),
    parentLocators,
  }
  if (footer !== undefined) {
    const needed = blockCount(footer.currentSizeBytes, blockSizeBytes)
    if (maxTableEntries < needed) {
      throw corrupt('header', 'maxTableEntries', baseOffset + 28, `BAT has ${maxTableEntries} entries but the ${footer.currentSizeBytes}-byte disk needs ${needed}`)
    }
    if (footer.diskType === DISK_TYPES.DIFFERENCING && parentUuid === NULL_UUID) {
      throw corrupt('header', 'parentUuid', baseOffset + 40, 'a differencing disk has no parent UUID')
    }
  }
  return header
}

/** Encodes a header into 1024 bytes with a fresh checksum (`checksum` is updated). */
export function encodeHeader(header: VhdHeader): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE)
  buf.write(HEADER_COOKIE, 0, 'latin1')
  writeU64(buf, 8, null)
  writeU64(buf, 16, header.tableOffset)
  buf.writeUInt32BE(header.headerVersion, 24)
  buf.writeUInt32BE(header.maxTableEntries, 28)
  buf.writeUInt32BE(header.blockSizeBytes, 32)
  uuidToBytes(header.parentUuid, buf, 40)
  buf.writeUInt32BE(header.parentTimestamp >>> 0, 56)
  const name = Buffer.from(header.parentUnicodeName, 'utf16le')
  if (name.length > 512) throw new RangeError(`parent name "${header.parentUnicodeName}" is longer than 256 UTF-16 units`)
  name.swap16()
  name.copy(buf, 64)
  for (let i = 0; i < PARENT_LOCATOR_ENTRIES; i++) {
    const entry = header.parentLocators[i] ?? emptyLocator()
    const at = LOCATORS_OFFSET + i * 24
    buf.writeUInt32BE(entry.platformCode, at)
    buf.writeUInt32BE(entry.platformDataSpace, at + 4)
    buf.writeUInt32BE(entry.platformDataLength, at + 8)
    writeU64(buf, at + 16, entry.platformDataOffset)
  }
  const checksum = vhdChecksum(buf, CHECKSUM_OFFSET)
  buf.writeUInt32BE(checksum, CHECKSUM_OFFSET)
  header.checksum = checksum
  return buf
}

/** A fresh dynamic header (BAT right after footer+header, 2 MiB blocks, no parent). */
export function createHeader(options: { currentSizeBytes: number; blockSizeBytes?: number }): VhdHeader {
  const blockSizeBytes = options.blockSizeBytes ?? DEFAULT_BLOCK_SIZE
  return {
    tableOffset: FOOTER_SIZE + HEADER_SIZE,
    headerVersion: HEADER_VERSION,
    maxTableEntries: blockCount(options.currentSizeBytes, blockSizeBytes),
    blockSizeBytes,
    checksum: 0,
    parentUuid: NULL_UUID,
    parentTimestamp: 0,
    parentUnicodeName: '',
    parentLocators: Array.from({ length: PARENT_LOCATOR_ENTRIES }, emptyLocator),
  }
}

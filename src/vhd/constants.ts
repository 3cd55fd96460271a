/**
 * Constants of the VHD format (Microsoft "Virtual Hard Disk Image Format Specification" v1.0), as
 * Xen Orchestra and XAPI use it: big-endian structures, 512-byte sectors, 2 MiB blocks.
 */

export const SECTOR_SIZE = 512
export const FOOTER_SIZE = 512
export const HEADER_SIZE = 1024
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024
/** BAT entry of a block that is not allocated */
export const BLOCK_UNUSED = 0xffffffff
export const FOOTER_COOKIE = 'conectix'
export const HEADER_COOKIE = 'cxsparse'
export const FILE_FORMAT_VERSION = 0x00010000
export const HEADER_VERSION = 0x00010000
/** footer `features`: bit 1 is reserved and must be set */
export const FEATURES_RESERVED = 0x00000002
export const PARENT_LOCATOR_ENTRIES = 8
/** Largest virtual size the format allows (2040 GiB, limited by CHS geometry and tools). */
export const MAX_VIRTUAL_SIZE = 2040 * 1024 * 1024 * 1024
/** Name Xen Orchestra writes in `creatorApplication`; we write the same so XO sees its own kind. */
export const CREATOR_APPLICATION = 'xo  '
/** Seconds between the Unix epoch and the VHD epoch (2000-01-01T00:00:00Z). */
export const VHD_EPOCH_OFFSET_S = 946_684_800

export const DISK_TYPES = {
  FIXED: 2,
  DYNAMIC: 3,
  DIFFERENCING: 4,
} as const
export type DiskType = (typeof DISK_TYPES)[keyof typeof DISK_TYPES]

export const PLATFORMS = {
  NONE: 0,
  WI2R: 0x57693272,
  WI2K: 0x5769326b,
  W2RU: 0x57327275,
  W2KU: 0x57326b75,
  MAC: 0x4d616320,
  MACX: 0x4d616358,
} as const
export const KNOWN_PLATFORM_CODES: ReadonlySet<number> = new Set(Object.values(PLATFORMS))

/** Bytes of a block's sector bitmap, padded to whole sectors (512 for 2 MiB blocks). */
export function bitmapSizeBytes(blockSizeBytes: number): number {
  return Math.max(1, Math.ceil(blockSizeBytes / SECTOR_SIZE / 8 / SECTOR_SIZE)) * SECTOR_SIZE
}

/** Bytes of the BAT for `entries` entries, padded to whole sectors (at least one). */
export function batSizeBytes(entries: number): number {
  return Math.max(1, Math.ceil((entries * 4) / SECTOR_SIZE)) * SECTOR_SIZE
}

/** Number of blocks that cover a virtual size. */
export function blockCount(virtualSizeBytes: number, blockSizeBytes: number): number {
  return Math.ceil(virtualSizeBytes / blockSizeBytes)
}

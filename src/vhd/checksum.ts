/**
 * The VHD checksum: one's complement of the byte sum of a structure, the checksum field itself being
 * counted as zero. Used for the footer (field at 64) and the dynamic header (field at 36).
 */

export function vhdChecksum(buf: Uint8Array, checksumOffset: number): number {
  let sum = 0
  for (let i = 0; i < buf.length; i++) {
    if (i >= checksumOffset && i < checksumOffset + 4) continue
    sum += buf[i] ?? 0
  }
  return ~sum >>> 0
}

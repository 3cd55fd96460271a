/** UUIDs as the VHD stores them (16 raw bytes, RFC 4122 byte order) to and from their canonical text. */
import { randomUUID } from 'node:crypto'

export const NULL_UUID = '00000000-0000-0000-0000-000000000000'

export function uuidFromBytes(buf: Uint8Array): string {
  const hex = Buffer.from(buf.buffer, buf.byteOffset, 16).toString('hex')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

export function uuidToBytes(uuid: string, target: Buffer, offset: number): void {
  const hex = uuid.replaceAll('-', '')
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new RangeError(`"${uuid}" is not a UUID`)
  target.write(hex, offset, 16, 'hex')
}

export function newUuid(): string {
  return randomUUID()
}

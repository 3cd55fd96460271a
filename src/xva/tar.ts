/**
 * The small part of tar (POSIX ustar) an XVA needs: XAPI's export is a tar of `ova.xml` and the disks'
 * 1 MiB chunks with their checksum files, every entry a regular file under 8 GiB. `tarHeader` and
 * `tarPadding` write entries, `TAR_END` closes the archive (two zero blocks, what XO's isValidXva looks
 * for at the end of an uncompressed XVA); `readTar` parses a byte stream into whole entries. Node has no
 * tar and no package is needed for this much; entries are bounded (`maxEntryBytes`) so a corrupt size
 * field cannot make the reader buffer gigabytes.
 */
import { BackupProxyError } from '../common/errors.js'

export const TAR_BLOCK = 512
/** the end of an archive: two zero blocks */
export const TAR_END = Buffer.alloc(2 * TAR_BLOCK)

function octal(buf: Buffer, offset: number, length: number, value: number): void {
  buf.write(value.toString(8).padStart(length - 1, '0') + '\0', offset, length, 'latin1')
}

/** The 512-byte ustar header of a regular file. */
export function tarHeader(name: string, size: number, mtimeSeconds = 0): Buffer {
  if (Buffer.byteLength(name) > 100) throw new RangeError(`tar entry name too long: ${name}`)
  if (!Number.isSafeInteger(size) || size < 0 || size >= 8 * 1024 ** 3) throw new RangeError(`tar entry size out of range: ${size}`)
  const h = Buffer.alloc(TAR_BLOCK)
  h.write(name, 0, 100, 'utf8')
  octal(h, 100, 8, 0o644)
  octal(h, 108, 8, 0)
  octal(h, 116, 8, 0)
  octal(h, 124, 12, size)
  octal(h, 136, 12, mtimeSeconds)
  h.fill(0x20, 148, 156) // checksum field counts as spaces while summing
  h.write('0', 156, 1, 'latin1')
  h.write('ustar\0', 257, 6, 'latin1')
  h.write('00', 263, 2, 'latin1')
  let sum = 0
  for (const b of h) sum += b
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1')
  return h
}

/** Zero bytes after `size` bytes of data up to the next block boundary. */
export function tarPadding(size: number): Buffer {
  const rest = size % TAR_BLOCK
  return rest === 0 ? Buffer.alloc(0) : Buffer.alloc(TAR_BLOCK - rest)
}

interface TarEntry {
  name: string
  data: Buffer
}

function corrupt(message: string): BackupProxyError {
  return new BackupProxyError('E_XVA_CORRUPT', `invalid XVA: ${message}`)
}

function parseHeader(h: Buffer): { name: string; size: number } | undefined {
  if (h.every((b) => b === 0)) return undefined
  let sum = 0
  for (let i = 0; i < TAR_BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!
  const stored = Number.parseInt(h.toString('latin1', 148, 156).replace(/[\0 ]+$/g, '').trim(), 8)
  if (stored !== sum) throw corrupt(`tar header checksum mismatch (stored ${stored}, computed ${sum})`)
  const nameEnd = h.indexOf(0, 0)
  let name = h.toString('utf8', 0, nameEnd === -1 || nameEnd > 100 ? 100 : nameEnd)
  if (h.toString('latin1', 257, 262) === 'ustar') {
    const prefixEnd = h.indexOf(0, 345)
    const prefix = h.toString('utf8', 345, prefixEnd === -1 || prefixEnd > 500 ? 500 : prefixEnd)
    if (prefix !== '') name = `${prefix}/${name}`
  }
  const size = Number.parseInt(h.toString('latin1', 124, 136).replace(/\0/g, '').trim() || '0', 8)
  if (!Number.isSafeInteger(size) || size < 0) throw corrupt(`entry ${name} has an invalid size`)
  return { name, size }
}

/** Byte source that hands out exact lengths from a chunk stream. */
class Reader {
  private chunks: Buffer[] = []
  private buffered = 0
  constructor(private readonly it: AsyncIterator<Buffer>) {}

  async read(n: number): Promise<Buffer | undefined> {
    while (this.buffered < n) {
      const r = await this.it.next()
      if (r.done === true) return undefined
      this.chunks.push(r.value)
      this.buffered += r.value.length
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks)
    const out = all.subarray(0, n)
    const rest = all.subarray(n)
    this.chunks = rest.length === 0 ? [] : [rest]
    this.buffered = rest.length
    return out
  }
}

/**
 * The entries of a tar stream, each whole, in order, until the end blocks (anything after them is
 * ignored, as tar does). A truncated archive, a bad header checksum or an entry larger than
 * `maxEntryBytes` is an E_XVA_CORRUPT error.
 */
export async function* readTar(source: AsyncIterable<Buffer>, options: { maxEntryBytes?: number } = {}): AsyncGenerator<TarEntry> {
  const max = options.maxEntryBytes ?? 64 * 1024 * 1024
  const reader = new Reader(source[Symbol.asyncIterator]())
  for (;;) {
    const h = await reader.read(TAR_BLOCK)
    if (h === undefined) throw corrupt('the archive is truncated (no end blocks)')
    const header = parseHeader(h)
    if (header === undefined) return
    if (header.size > max) throw corrupt(`entry ${header.name} is ${header.size} bytes, more than the ${max} an XVA entry may have`)
    const padded = header.size + tarPadding(header.size).length
    const body = await reader.read(padded)
    if (body === undefined) throw corrupt(`the archive is truncated inside ${header.name}`)
    yield { name: header.name, data: body.subarray(0, header.size) }
  }
}

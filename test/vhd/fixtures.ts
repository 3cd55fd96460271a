/**
 * Generated VHD fixtures: a dynamic or differencing VHD stream laid out as XAPI exports it (footer,
 * header, BAT, blocks in offset order, footer), built in memory from a spec, with the raw image it
 * stands for. Block contents are deterministic from a seed so every test can recompute them.
 */
import { createHash } from 'node:crypto'
import { BLOCK_UNUSED, DEFAULT_BLOCK_SIZE, DISK_TYPES, FOOTER_SIZE, HEADER_SIZE, SECTOR_SIZE, batSizeBytes, bitmapSizeBytes, blockCount } from '../../src/vhd/constants.js'
import { createFooter, encodeFooter, type VhdFooter } from '../../src/vhd/footer.js'
import { createHeader, encodeHeader, type VhdHeader } from '../../src/vhd/header.js'
import { fullBitmap } from '../../src/vhd/bitmap.js'

interface FixtureSpec {
  sizeBytes: number
  /** present blocks; default all */
  blocks?: number[]
  seed?: string
  /** differencing disk with this parent UUID */
  parentUuid?: string
  parentName?: string
  /** padding sectors inserted before each block (XAPI aligns; we check the parser skips gaps) */
  gapSectors?: number
  /** store blocks in reverse index order (BAT order differs from index order) */
  reverseOffsets?: boolean
  uuid?: string
  /** content kind: random bytes, a compressible pattern, or zeros */
  content?: 'random' | 'pattern' | 'zeros'
  /** do not build the raw image (huge sparse disks) */
  noRaw?: boolean
}

export interface Fixture {
  vhd: Buffer
  /** raw image of this disk alone (absent blocks are zeros) */
  raw: Buffer
  footer: VhdFooter
  header: VhdHeader
  blocks: number[]
}

/** Deterministic block data. */
export function blockData(seed: string, index: number, size = DEFAULT_BLOCK_SIZE, content: FixtureSpec['content'] = 'random'): Buffer {
  const out = Buffer.alloc(size)
  if (content === 'zeros') return out
  if (content === 'pattern') {
    const line = Buffer.from(`${seed} block ${index} — some compressible text for brotli\n`)
    for (let o = 0; o < size; o += line.length) line.copy(out, o)
    return out
  }
  // xorshift32 seeded from a hash: fast, deterministic, incompressible
  let x = createHash('sha256').update(`${seed}:${index}`).digest().readUInt32LE(0) | 1
  const words = new Uint32Array(out.buffer, out.byteOffset, size >> 2)
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    words[i] = x >>> 0
  }
  return out
}

export function makeFixture(spec: FixtureSpec): Fixture {
  const seed = spec.seed ?? 'seed'
  const n = blockCount(spec.sizeBytes, DEFAULT_BLOCK_SIZE)
  const blocks = spec.blocks ?? Array.from({ length: n }, (_, i) => i)
  const footer = createFooter({ currentSizeBytes: spec.sizeBytes, diskType: spec.parentUuid === undefined ? DISK_TYPES.DYNAMIC : DISK_TYPES.DIFFERENCING, ...(spec.uuid === undefined ? {} : { uuid: spec.uuid }), timestamp: 700_000_000 })
  const header = createHeader({ currentSizeBytes: spec.sizeBytes })
  if (spec.parentUuid !== undefined) {
    header.parentUuid = spec.parentUuid
    header.parentUnicodeName = spec.parentName ?? 'parent.vhd'
  }
  const bmSize = bitmapSizeBytes(DEFAULT_BLOCK_SIZE)
  const full = bmSize + DEFAULT_BLOCK_SIZE
  const bat = new Uint32Array(header.maxTableEntries).fill(BLOCK_UNUSED)
  const ordered = spec.reverseOffsets === true ? [...blocks].reverse() : [...blocks]
  const gap = (spec.gapSectors ?? 0) * SECTOR_SIZE
  let offset = FOOTER_SIZE + HEADER_SIZE + batSizeBytes(header.maxTableEntries)
  for (const index of ordered) {
    offset += gap
    bat[index] = offset / SECTOR_SIZE
    offset += full
  }
  const vhd = Buffer.alloc(offset + FOOTER_SIZE)
  const footerBuf = encodeFooter(footer)
  footerBuf.copy(vhd, 0)
  encodeHeader(header).copy(vhd, FOOTER_SIZE)
  for (let i = 0; i < bat.length; i++) vhd.writeUInt32BE(bat[i] ?? BLOCK_UNUSED, FOOTER_SIZE + HEADER_SIZE + i * 4)
  const raw = Buffer.alloc(spec.noRaw === true ? 0 : spec.sizeBytes)
  const bitmap = fullBitmap(DEFAULT_BLOCK_SIZE)
  for (const index of blocks) {
    const at = (bat[index] ?? 0) * SECTOR_SIZE
    bitmap.copy(vhd, at)
    const data = blockData(seed, index, DEFAULT_BLOCK_SIZE, spec.content)
    data.copy(vhd, at + bmSize)
    if (spec.noRaw !== true) data.copy(raw, index * DEFAULT_BLOCK_SIZE, 0, Math.min(DEFAULT_BLOCK_SIZE, spec.sizeBytes - index * DEFAULT_BLOCK_SIZE))
  }
  footerBuf.copy(vhd, offset)
  return { vhd, raw, footer, header, blocks: ordered }
}

/** Splits a buffer into chunks of `size` (default 64 KiB, as a socket would deliver it). */
export async function* chunked(buf: Buffer, size = 65536): AsyncGenerator<Buffer> {
  await Promise.resolve()
  for (let o = 0; o < buf.length; o += size) yield buf.subarray(o, Math.min(buf.length, o + size))
}

/**
 * Per-chunk compression of VhdDirectory files (header, footer, bat, blocks), recorded in
 * `chunk-filters.json` as Xen Orchestra does (`["brotli"]`; absent = none).
 *
 * Brotli at quality 0 (XO's setting) with a zlib chunkSize ≥ the block size (Node's 16 KiB default makes
 * it ~3× more expensive on 2 MiB blocks). Incompressible data (random, encrypted, already compressed) is
 * detected with a cheap sampled entropy estimate and stored as a brotli stream made of one
 * *uncompressed* meta-block (RFC 7932 §9.2, ISUNCOMPRESSED): any brotli decoder, XO's included, reads it,
 * it costs 4 header bytes + 1 trailer byte, and the payload is written as is (no copy, no CPU). Blocks
 * whose compressed form is not smaller take the same route.
 *
 * zstd is not offered: Node 20's zlib has no zstd and the npm bindings here need a native build or a
 * binary download at install time; XO's readers do not know it either.
 *
 * Everything is async on libuv's thread pool (or call it from a worker thread): nothing blocks the
 * event loop for a block's worth of CPU.
 */
import { promisify } from 'node:util'
import zlib from 'node:zlib'
import { encodeSparseBrotli, parseSparseBrotli, sectorRuns } from './brotli-sparse.js'
import { corrupt, unsupported } from './corrupt.js'

export type ChunkCompression = 'none' | 'brotli'
export const CHUNK_COMPRESSIONS: readonly ChunkCompression[] = ['none', 'brotli']

const brotliCompress = promisify(zlib.brotliCompress)
const brotliDecompress = promisify(zlib.brotliDecompress)

/** chunk size for zlib: at least a full block, so one call produces one output buffer */
const ZLIB_CHUNK_BYTES = 4 * 1024 * 1024
/** largest payload one uncompressed meta-block can hold */
const MAX_STORED_BYTES = 1 << 24

/**
 * Brotli framing of `length` stored bytes: stream header (WBITS=24) + meta-block header
 * (ISLAST=0, MNIBBLES, MLEN-1, ISUNCOMPRESSED=1), padded to a byte; the trailer is an empty last
 * meta-block (ISLAST=1, ISLASTEMPTY=1).
 */
export function brotliStoredHeader(length: number): Buffer {
  if (length < 1 || length > MAX_STORED_BYTES) throw new RangeError(`a stored brotli meta-block holds 1 to ${MAX_STORED_BYTES} bytes, got ${length}`)
  const nibbles = length - 1 < 1 << 16 ? 4 : length - 1 < 1 << 20 ? 5 : 6
  let bits = 0
  let n = 0
  const put = (value: number, width: number): void => {
    bits += value * 2 ** n
    n += width
  }
  put(1, 1) // WBITS: 1 then 3 bits n=7 → window 2^24
  put(7, 3)
  put(0, 1) // ISLAST
  put(nibbles - 4, 2) // MNIBBLES
  put(length - 1, nibbles * 4) // MLEN - 1
  put(1, 1) // ISUNCOMPRESSED
  const out = Buffer.alloc(Math.ceil(n / 8))
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(bits / 2 ** (8 * i)) & 0xff
  return out
}
const BROTLI_STORED_TRAILER: Buffer = Buffer.from([0x03])

/** pool margins (VhdBlockPool) with room for the framing of a stored chunk: header ≤ 4 bytes, trailer 1 */
export const STORED_FRAME_MARGIN = { before: 8, after: 8 } as const

/**
 * The memory a stored brotli chunk of `into.length` bytes takes when its payload is `into` itself (its
 * header just before, its trailer just after, in the margins of a pool buffer); undefined when `into`'s
 * memory has no room around it. Reading the chunk file there lands the block in place.
 */
export function storedFrameAround(into: Buffer): Buffer | undefined {
  if (into.length < 1 || into.length > MAX_STORED_BYTES) return undefined
  const head = brotliStoredHeader(into.length).length
  const start = into.byteOffset - head
  if (start < 0 || into.byteOffset + into.length + 1 > into.buffer.byteLength) return undefined
  return Buffer.from(into.buffer, start, head + into.length + 1)
}

/** Shannon entropy (bits per byte) of the bytes of `slices` together. */
function entropyOf(slices: readonly Uint8Array[]): number {
  const counts = new Uint32Array(256)
  let total = 0
  for (const slice of slices) {
    for (const b of slice) counts[b] = (counts[b] ?? 0) + 1
    total += slice.length
  }
  let entropy = 0
  for (const c of counts) {
    if (c === 0) continue
    const p = c / total
    entropy -= p * Math.log2(p)
  }
  return entropy
}

/**
 * Estimated entropy of a sample of the buffer: 16 slices of 1 KiB spread over it. Random or encrypted
 * data is ≈ 8; text, zeros and file system metadata are far lower.
 */
function sampledEntropy(buf: Uint8Array): number {
  const slices = 16
  const slice = Math.min(1024, Math.floor(buf.length / slices))
  if (slice === 0) return entropyOf([buf])
  const stride = Math.floor(buf.length / slices)
  return entropyOf(Array.from({ length: slices }, (_, s) => buf.subarray(s * stride, s * stride + slice)))
}

/** Above this sampled entropy a block is stored without trying to compress it. */
const INCOMPRESSIBLE_ENTROPY = 7.5
const SECTOR = 512
const ZERO_SECTOR = Buffer.alloc(SECTOR)
/** sectors sampled by `looksSparse`, every SAMPLE_STRIDE-th (odd: no aliasing with 4 KiB patterns) */
const SAMPLE_SECTORS = 64
const SAMPLE_STRIDE = 61

/**
 * Whether a sample of the chunk's sectors has whole zero sectors and incompressible other ones (the
 * first 256 bytes of each): the case of `encodeSparseBrotli`, checked before scanning every sector.
 */
function looksSparse(data: Buffer, zeroSector: Buffer): boolean {
  const sectors = Math.floor(data.length / SECTOR)
  const stride = sectors <= SAMPLE_SECTORS ? 1 : Math.min(SAMPLE_STRIDE, Math.floor(sectors / SAMPLE_SECTORS) | 1)
  const nonZero: Buffer[] = []
  let zeros = 0
  for (let k = 0; k < SAMPLE_SECTORS && k * stride < sectors; k++) {
    const at = k * stride * SECTOR
    if (zeroSector.compare(data, at, at + SECTOR) === 0) zeros++
    else nonZero.push(data.subarray(at, at + 256))
  }
  return zeros > 0 && (nonZero.length === 0 || entropyOf(nonZero) > INCOMPRESSIBLE_ENTROPY)
}


interface CompressedChunk {
  /** buffers to write one after the other (no concatenation: the payload may be the caller's buffer) */
  parts: Buffer[]
  sizeBytes: number
  /** true when stored in a raw meta-block */
  stored: boolean
}

/** Encodes a chunk for a VhdDirectory with the given filter. */
export async function compressChunk(data: Buffer, compression: ChunkCompression): Promise<CompressedChunk> {
  if (compression === 'none') return { parts: [data], sizeBytes: data.length, stored: true }
  const stored = (): CompressedChunk => {
    const head = brotliStoredHeader(data.length)
    return { parts: [head, data, BROTLI_STORED_TRAILER], sizeBytes: head.length + data.length + 1, stored: true }
  }
  if (data.length === 0) {
    const empty = await brotliCompress(data)
    return { parts: [empty], sizeBytes: empty.length, stored: false }
  }
  if (data.length <= MAX_STORED_BYTES && data.length >= 4096 && sampledEntropy(data) > INCOMPRESSIBLE_ENTROPY) return stored()
  if (data.length >= 4096 && looksSparse(data, ZERO_SECTOR)) {
    // confirmed on the data runs of the whole chunk: 16 slices of up to 256 bytes spread over them
    const runs = sectorRuns(data, ZERO_SECTOR)
    const dataRuns = runs.filter((r) => !r.zero)
    const slices = dataRuns.filter((_, i) => i % Math.ceil(dataRuns.length / 16) === 0).map((r) => data.subarray(r.start, Math.min(r.end, r.start + 256)))
    if (slices.length === 0 || entropyOf(slices) > INCOMPRESSIBLE_ENTROPY) {
      const sparse = encodeSparseBrotli(data, runs)
      return { parts: [sparse], sizeBytes: sparse.length, stored: false }
    }
  }
  const compressed = await brotliCompress(data, {
    chunkSize: Math.max(ZLIB_CHUNK_BYTES, data.length),
    params: {
      [zlib.constants.BROTLI_PARAM_QUALITY]: zlib.constants.BROTLI_MIN_QUALITY,
      [zlib.constants.BROTLI_PARAM_SIZE_HINT]: data.length,
    },
  })
  if (compressed.length >= data.length && data.length <= MAX_STORED_BYTES) return stored()
  return { parts: [compressed], sizeBytes: compressed.length, stored: false }
}

/** Decodes a chunk written with `compression`; `what` names it in errors. */
/** `into`: where a sparse stream (brotli-sparse.ts) is rebuilt when it has the expected size (a pool's buffer) */
export async function decompressChunk(data: Buffer, compression: ChunkCompression, what: string, expectedSizeBytes?: number, into?: Buffer): Promise<Buffer> {
  if (compression === 'none') return data
  // fast path: our own stored meta-block is read without running the decoder
  if (expectedSizeBytes !== undefined && expectedSizeBytes > 0 && expectedSizeBytes <= MAX_STORED_BYTES) {
    const head = brotliStoredHeader(expectedSizeBytes)
    if (data.length === head.length + expectedSizeBytes + 1 && data.subarray(0, head.length).equals(head) && data[data.length - 1] === 0x03) {
      return data.subarray(head.length, head.length + expectedSizeBytes)
    }
  }
  // our sparse streams (zero runs and stored runs) are rebuilt without the decoder too
  if (expectedSizeBytes !== undefined) {
    const sparse = parseSparseBrotli(data, expectedSizeBytes, into?.length === expectedSizeBytes ? into : undefined)
    if (sparse !== undefined) return sparse
  }
  try {
    // an output buffer of the expected size (+1: zlib asks for a new buffer when one is filled exactly),
    // not 4 MiB: half the memory per block a restore allocates, and so fewer garbage collections
    return await brotliDecompress(data, { chunkSize: expectedSizeBytes === undefined ? ZLIB_CHUNK_BYTES : Math.max(64, expectedSizeBytes + 1) })
  } catch (error) {
    throw corrupt('directory', what, 0, `brotli data does not decode (${(error as Error).message})`, error)
  }
}

/** Parses chunk-filters.json (XO: an ordered array of filters; we know none or ["brotli"]). */
export function parseChunkFilters(text: string | undefined): ChunkCompression {
  if (text === undefined) return 'none'
  let filters: unknown
  try {
    filters = JSON.parse(text)
  } catch (error) {
    throw corrupt('directory', 'chunk-filters.json', 0, 'chunk-filters.json is not JSON', error)
  }
  if (!Array.isArray(filters) || filters.some((f) => typeof f !== 'string')) throw corrupt('directory', 'chunk-filters.json', 0, `chunk-filters.json is ${text}, expected an array of filter names`)
  if (filters.length === 0) return 'none'
  if (filters.length === 1 && filters[0] === 'brotli') return 'brotli'
  throw unsupported(`VhdDirectory chunk filters ${text} (supported: none or ["brotli"]; encrypted remotes are read through the remote's encryption layer)`, { filters: text })
}

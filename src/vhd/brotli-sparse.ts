/**
 * "Sparse" brotli streams for chunks made only of zero runs and incompressible data (a block of a disk
 * where compressed or encrypted files sit among never-written sectors): each run of non-zero sectors is
 * an *uncompressed* meta-block (RFC 7932 §9.2, ISUNCOMPRESSED) and each run of zero sectors a tiny
 * compressed meta-block holding one command: insert one literal 0, copy length-1 bytes at distance 1.
 * Any brotli decoder reads it (XO's included: `zlib.brotliDecompress`), and it is smaller than both the
 * raw chunk and brotli's own output for such data.
 *
 * Why by hand: Node's brotli decoder costs ~4 CPU s/GiB on such blocks (a byte-by-byte loop for the
 * overlapping copies of zero runs, Huffman decoding of the random literals), more than the whole rest of a
 * restore, and no encoder setting avoids it. The exact shape written here is recognised by
 * `parseSparseBrotli`, which rebuilds the chunk with one zeroed allocation and a copy per data run, no
 * decoder. Anything else (XO's streams, zlib's) returns undefined and goes to zlib.
 */

/** largest MLEN of one meta-block */
const MAX_META_BLOCK_BYTES = 1 << 24
const SECTOR = 512
/** copy length codes 20–23 (RFC 7932 §5): base lengths and extra bits; a zero run copies ≥ 511 bytes */
const COPY_CODES: readonly { code: number; base: number; bits: number }[] = [
  { code: 20, base: 326, bits: 8 },
  { code: 21, base: 582, bits: 9 },
  { code: 22, base: 1094, bits: 10 },
  { code: 23, base: 2118, bits: 24 },
]
/** insert-and-copy symbol for insert code 1 (one literal) and copy code c ≥ 16, explicit distance */
const insertAndCopySymbol = (copyCode: number): number => 384 + (1 << 3) + (copyCode - 16)
/** distance code 16 with NPOSTFIX = NDIRECT = 0: distance = 1 + one extra bit */
const DISTANCE_SYMBOL = 16

/** LSB-first bit packing straight into the output buffer (values of at most 24 bits). */
class BitWriter {
  #acc = 0
  #n = 0
  pos = 0
  constructor(readonly out: Buffer) {}
  put(value: number, width: number): void {
    this.#acc = (this.#acc | (value << this.#n)) >>> 0
    this.#n += width
    while (this.#n >= 8) {
      this.out[this.pos++] = this.#acc & 0xff
      this.#acc >>>= 8
      this.#n -= 8
    }
  }
  /** pads to a byte with zero bits */
  align(): void {
    if (this.#n > 0) this.put(0, 8 - this.#n)
  }
  /** copies bytes at a byte boundary */
  bytes(src: Buffer, start: number, end: number): void {
    this.pos += src.copy(this.out, this.pos, start, end)
  }
}

function nibblesOf(length: number): number {
  return length - 1 < 1 << 16 ? 4 : length - 1 < 1 << 20 ? 5 : 6
}

function putMetaBlockHeader(w: BitWriter, length: number, uncompressed: boolean): void {
  const nibbles = nibblesOf(length)
  w.put(0, 1) // ISLAST
  w.put(nibbles - 4, 2) // MNIBBLES
  w.put(length - 1, nibbles * 4)
  w.put(uncompressed ? 1 : 0, 1)
}

/** a compressed meta-block of `length` zeros (327 ≤ length ≤ 2^24) */
function putZeroMetaBlock(w: BitWriter, length: number): void {
  const copy = length - 1
  const c = [...COPY_CODES].reverse().find((x) => copy >= x.base)
  if (c === undefined || length > MAX_META_BLOCK_BYTES) throw new RangeError(`a zero meta-block holds 327 to ${MAX_META_BLOCK_BYTES} bytes, got ${length}`)
  putMetaBlockHeader(w, length, false)
  w.put(0, 3) // NBLTYPESL, NBLTYPESI, NBLTYPESD = 1
  w.put(0, 6) // NPOSTFIX = 0, NDIRECT = 0
  w.put(0, 2) // context mode of the one literal block type
  w.put(0, 2) // NTREESL = 1, NTREESD = 1
  // three simple prefix codes of one symbol each (HSKIP = 1, NSYM - 1 = 0): reading them takes no bits
  w.put(1, 2)
  w.put(0, 2)
  w.put(0, 8) // literal 0
  w.put(1, 2)
  w.put(0, 2)
  w.put(insertAndCopySymbol(c.code), 10)
  w.put(1, 2)
  w.put(0, 2)
  w.put(DISTANCE_SYMBOL, 6)
  // the command: (insert extra: none) copy extra bits, (literal: no bits), distance extra bit 0 → 1
  w.put(copy - c.base, c.bits)
  w.put(0, 1)
}

interface Run {
  zero: boolean
  start: number
  end: number
}

/** Runs of whole zero sectors and of everything else (a trailing partial sector is data). */
export function sectorRuns(data: Buffer, zeroSector: Buffer = Buffer.alloc(SECTOR)): Run[] {
  const runs: Run[] = []
  for (let at = 0; at < data.length; at += SECTOR) {
    const end = Math.min(at + SECTOR, data.length)
    const zero = end - at === SECTOR && zeroSector.compare(data, at, end) === 0
    const last = runs[runs.length - 1]
    if (last !== undefined && last.zero === zero) last.end = end
    else runs.push({ zero, start: at, end })
  }
  return runs
}

/** The sparse brotli stream of `data` split into `runs` (from sectorRuns), as one buffer. */
export function encodeSparseBrotli(data: Buffer, runs: readonly Run[]): Buffer {
  // bound: the data runs, ≤ 13 bytes of framing per meta-block (≥ 1 per 2^24 bytes of a run), header, trailer
  const metaBlocks = runs.reduce((n, r) => n + Math.ceil((r.end - r.start) / MAX_META_BLOCK_BYTES), 0)
  const w = new BitWriter(Buffer.allocUnsafe(runs.reduce((n, r) => n + (r.zero ? 0 : r.end - r.start), 0) + 13 * metaBlocks + 2))
  w.put(1, 1) // WBITS = 24
  w.put(7, 3)
  for (const run of runs) {
    for (let at = run.start; at < run.end; ) {
      const n = Math.min(run.end - at, MAX_META_BLOCK_BYTES)
      // a zero meta-block needs ≥ 327 bytes: a short remainder is stored (only past 2^24)
      if (run.zero && n >= 327) putZeroMetaBlock(w, n)
      else {
        putMetaBlockHeader(w, n, true)
        w.align()
        w.bytes(data, at, at + n)
      }
      at += n
    }
  }
  w.put(3, 2) // ISLAST, ISLASTEMPTY
  w.align()
  return w.out.subarray(0, w.pos)
}

/** LSB-first bit reading (values of at most 24 bits); past the end throws */
class BitReader {
  #pos = 0 // in bits
  constructor(readonly buf: Buffer) {}
  get bytePos(): number {
    return this.#pos >>> 3
  }
  bits(width: number): number {
    const p = this.#pos
    if (p + width > this.buf.length * 8) throw new RangeError('past the end')
    const b = this.buf
    const i = p >>> 3
    // shift + width ≤ 31: four bytes hold them (bytes past the end read as 0, never used)
    const acc = ((b[i] ?? 0) | ((b[i + 1] ?? 0) << 8) | ((b[i + 2] ?? 0) << 16) | ((b[i + 3] ?? 0) << 24)) >>> (p & 7)
    this.#pos = p + width
    return width === 0 ? 0 : acc & (0xffffffff >>> (32 - width))
  }
  /** to the next byte; false when a padding bit is set */
  align(): boolean {
    const pad = (8 - (this.#pos & 7)) & 7
    return this.bits(pad) === 0
  }
  skipBytes(n: number): void {
    this.#pos += n * 8
  }
}

/** the fixed bits of a zero meta-block after ISUNCOMPRESSED, up to the insert-and-copy symbol */
function readZeroCommand(r: BitReader, length: number): boolean {
  if (r.bits(13) !== 0) return false // block type counts, NPOSTFIX, NDIRECT, context mode, tree counts
  if (r.bits(12) !== 1) return false // simple code (1), one symbol (0): literal 0
  const insertAndCopy = r.bits(14)
  if ((insertAndCopy & 15) !== 1) return false
  const c = COPY_CODES[(insertAndCopy >>> 4) - insertAndCopySymbol(20)]
  if (c === undefined || r.bits(10) !== (1 | (DISTANCE_SYMBOL << 4))) return false
  const copy = c.base + r.bits(c.bits)
  return 1 + copy === length && r.bits(1) === 0
}

/**
 * The chunk of a stream written by encodeSparseBrotli, of exactly `expectedSizeBytes`, rebuilt in `into`
 * when given (its zero runs written too) or in a new zeroed buffer; undefined for any other brotli
 * stream (decode those with zlib; `into` may then hold anything).
 */
export function parseSparseBrotli(data: Buffer, expectedSizeBytes: number, into?: Buffer): Buffer | undefined {
  try {
    const r = new BitReader(data)
    if (r.bits(4) !== 0b1111) return undefined // WBITS = 24
    const reuse = into?.length === expectedSizeBytes
    const out = reuse ? into : Buffer.alloc(expectedSizeBytes)
    let at = 0
    for (;;) {
      if (r.bits(1) === 1) {
        // ISLAST: must be empty, then zero padding and the end of the data
        return r.bits(1) === 1 && r.align() && r.bytePos === data.length && at === expectedSizeBytes ? out : undefined
      }
      const nibbles = r.bits(2) + 4
      if (nibbles === 7) return undefined // metadata block
      const length = r.bits(nibbles * 4) + 1
      if (nibbles > 4 && length - 1 < 2 ** ((nibbles - 1) * 4)) return undefined // non-minimal: invalid brotli
      if (at + length > expectedSizeBytes) return undefined
      if (r.bits(1) === 1) {
        if (!r.align() || r.bytePos + length > data.length) return undefined
        data.copy(out, at, r.bytePos, r.bytePos + length)
        r.skipBytes(length)
      } else if (!readZeroCommand(r, length)) return undefined
      else if (reuse) out.fill(0, at, at + length)
      at += length
    }
  } catch {
    return undefined
  }
}

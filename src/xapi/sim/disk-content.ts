/**
 * Deterministic, sparse, memory-free disk content for the simulator.
 *
 * A disk is a map `block index → generation` (absent = never written = zeros). The bytes of a present
 * block are computed on the fly: a 512-byte stamp (lineage, block, generation) followed by the tail of
 * one of a few pre-generated 2 MiB patterns chosen by a hash of (seed, lineage, block, generation). So a
 * 100 GiB disk costs a few hundred kilobytes of map, exports are zero-copy slices of the pattern pool,
 * and two different (block, generation) pairs never have the same bytes (their stamps differ).
 *
 * A snapshot copies the map (the content as of the snapshot); a write gives some blocks a new
 * generation, so a later snapshot differs from the earlier one in exactly those 2 MiB blocks. Half the
 * patterns are random (incompressible), half are mostly-zero (compressible), like real disks.
 *
 * An imported disk (`PUT /import_raw_vdi`) has real bytes: those blocks are kept in `stored` with the
 * generation they were written at, and `blockParts()` serves them instead of a pattern for as long as
 * that generation is current (a later simulated write gives the block a pattern again).
 */
import { VHD_BLOCK_BYTES, SECTOR_BYTES } from './vhd-encoder.js'

const PATTERN_COUNT = 8

/** A small, fast, seedable PRNG (mulberry32). Not cryptographic; determinism is the point. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
}

/** 32-bit FNV-1a-style mix of numbers, used to derive seeds and pick patterns. */
export function mix(...values: number[]): number {
  let h = 0x811c9dc5
  for (const v of values) {
    h = Math.imul(h ^ (v >>> 0), 0x01000193) >>> 0
    h = Math.imul(h ^ Math.floor(v / 0x1_0000_0000), 0x01000193) >>> 0
    h ^= h >>> 13
  }
  return h >>> 0
}

/** Pre-generated 2 MiB patterns keyed by seed: PATTERN_COUNT × 2 MiB of memory, shared by every disk. */
export class PatternPool {
  readonly patterns: readonly Buffer[]
  constructor(readonly seed: number) {
    const patterns: Buffer[] = []
    for (let p = 0; p < PATTERN_COUNT; p++) {
      const next = prng(mix(seed, p, 0x5eed))
      const buf = Buffer.alloc(VHD_BLOCK_BYTES)
      const words = new Uint32Array(buf.buffer, buf.byteOffset, VHD_BLOCK_BYTES / 4)
      if (p % 2 === 0) {
        for (let i = 0; i < words.length; i++) words[i] = next()
      } else {
        // compressible: 1 KiB of random data in every 4 KiB, the rest zeros
        for (let i = 0; i < words.length; i++) if ((i & 1023) < 256) words[i] = next()
      }
      patterns.push(buf)
    }
    this.patterns = patterns
  }

  /** The 2 MiB pattern used by (lineage, block, generation). */
  pattern(lineage: number, block: number, generation: number): Buffer {
    return this.patterns[mix(this.seed, lineage, block, generation) % PATTERN_COUNT] as Buffer
  }

  /** The first sector of a block: identifies it uniquely. */
  stamp(lineage: number, block: number, generation: number): Buffer {
    const s = Buffer.alloc(SECTOR_BYTES)
    s.write('backup-proxy xapi-sim block', 0, 'latin1')
    s.writeUInt32BE(lineage, 32)
    s.writeUInt32BE(block, 36)
    s.writeUInt32BE(generation, 40)
    const next = prng(mix(this.seed, lineage, block, generation))
    for (let i = 48; i < SECTOR_BYTES; i += 4) s.writeUInt32BE(next(), i)
    return s
  }

  /** The block's bytes as two buffers (stamp, tail of the pattern): write both, copy neither. */
  blockParts(lineage: number, block: number, generation: number): [Buffer, Buffer] {
    return [this.stamp(lineage, block, generation), this.pattern(lineage, block, generation).subarray(SECTOR_BYTES)]
  }
}

/** Bytes of an imported block and the generation they belong to. */
interface StoredBlock {
  generation: number
  data: Buffer
}

/** The content of one VDI: virtual size, lineage (the disk it descends from) and block generations. */
export class DiskContent {
  constructor(
    readonly lineage: number,
    readonly virtualSizeBytes: number,
    readonly generations: Map<number, number>,
    /** imported blocks (never modified in place: a copy shares the buffers) */
    readonly stored: Map<number, StoredBlock> = new Map(),
  ) {}

  /** The bytes of present block `b` at generation `g`: imported bytes, or the pattern's two parts. */
  blockParts(patterns: PatternPool, b: number, g: number): Buffer[] {
    const s = this.stored.get(b)
    if (s !== undefined && s.generation === g) return [s.data]
    return patterns.blockParts(this.lineage, b, g)
  }

  /** Imports one block's bytes (VHD_BLOCK_BYTES) at a fresh generation. */
  storeBlock(b: number, data: Buffer, generation: number): void {
    if (b < 0 || b >= this.blockCount) throw new RangeError(`block ${b} is outside the ${this.blockCount}-block disk`)
    if (data.length !== VHD_BLOCK_BYTES) throw new RangeError(`an imported block must be ${VHD_BLOCK_BYTES} bytes, got ${data.length}`)
    this.generations.set(b, generation)
    this.stored.set(b, { generation, data })
  }

  get blockCount(): number {
    return Math.ceil(this.virtualSizeBytes / VHD_BLOCK_BYTES)
  }

  /** A disk with `fillRatio` of its blocks written once (generation 1), chosen from the seed. */
  static initial(seed: number, lineage: number, virtualSizeBytes: number, fillRatio: number): DiskContent {
    const disk = new DiskContent(lineage, virtualSizeBytes, new Map())
    const threshold = Math.floor(fillRatio * 0x1_0000_0000)
    for (let b = 0; b < disk.blockCount; b++) {
      if (mix(seed, lineage, b, 0xf111) < threshold) disk.generations.set(b, 1)
    }
    return disk
  }

  /** A frozen copy: what a snapshot's VDI holds. */
  copy(): DiskContent {
    return new DiskContent(this.lineage, this.virtualSizeBytes, new Map(this.generations), new Map(this.stored))
  }

  /** Present block indexes, ascending. */
  presentBlocks(): number[] {
    return [...this.generations.keys()].sort((a, b) => a - b)
  }

  /**
   * Blocks to put in a differencing VHD against `base`: those whose generation differs. A block present
   * in the base but absent here would need zeros; the simulator never unmaps, so that does not happen
   * except across lineages, where the block is sent as zeros (generation 0).
   */
  changedSince(base: DiskContent): number[] {
    const changed = new Set<number>()
    for (const [b, g] of this.generations) if (base.generations.get(b) !== g) changed.add(b)
    for (const b of base.generations.keys()) if (!this.generations.has(b)) changed.add(b)
    return [...changed].sort((a, b) => a - b)
  }

  /**
   * Writes `count` blocks (chosen deterministically from `writeSeed`), each to a fresh generation taken
   * from `nextGeneration()`. Returns the written block indexes, ascending.
   */
  write(count: number, writeSeed: number, nextGeneration: () => number): number[] {
    const total = this.blockCount
    const n = Math.min(Math.max(0, Math.floor(count)), total)
    const chosen = new Set<number>()
    const next = prng(writeSeed)
    if (n > total / 2) {
      // dense: walk every block and keep it with probability n/total until n are chosen
      for (let b = 0; b < total && chosen.size < n; b++) if (next() % (total - b) < n - chosen.size) chosen.add(b)
    } else {
      while (chosen.size < n) chosen.add(next() % total)
    }
    const generation = nextGeneration()
    for (const b of chosen) this.generations.set(b, generation)
    return [...chosen].sort((a, b) => a - b)
  }
}

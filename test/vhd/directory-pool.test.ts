import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { buffer as streamToBuffer } from 'node:stream/consumers'
import { brotliCompressSync } from 'node:zlib'
import { beforeAll, describe, expect, it } from 'vitest'
import { useTempDir } from '../helpers/tmp.js'
import { VhdBlockPool } from '../../src/vhd/block-pool.js'
import { encodeSparseBrotli, sectorRuns } from '../../src/vhd/brotli-sparse.js'
import { openChain } from '../../src/vhd/chain.js'
import { STORED_FRAME_MARGIN } from '../../src/vhd/compression.js'
import { blockPath, createVhdDirectorySink } from '../../src/vhd/directory-sink.js'
import { openVhd } from '../../src/vhd/open.js'
import { pumpVhd } from '../../src/vhd/sink.js'
import { openVhdStream } from '../../src/vhd/stream-parser.js'
import type { LocalRemote } from '../../src/remotes/local.js'
import { chunked, makeFixture } from './fixtures.js'
import { localRemote } from './remote.js'

const MiB = 1024 * 1024
const FULL = 512 + 2 * MiB
const tmp = useTempDir('bp-vhd-dir-pool-')

/** bitmap + 2 MiB: 1 KiB random in every 4 KiB, zeros elsewhere (written as sparse brotli) */
function sparseBlock(): Buffer {
  const parts: Buffer[] = [Buffer.alloc(512, 0xff)]
  for (let at = 0; at < 2 * MiB; at += 4096) parts.push(randomBytes(1024), Buffer.alloc(3072))
  return Buffer.concat(parts)
}

describe('VhdDirectory blocks read into pool buffers (restore)', () => {
  let remote: LocalRemote
  const base = 'vm/vdis/job/pool'
  const expected = new Map<number, Buffer>()
  beforeAll(async () => {
    remote = await localRemote(join(tmp(), 'remote'))
    // 4 random blocks (stored brotli chunks), then block 1 rewritten as sparse brotli, block 2 as zlib's brotli
    const fx = makeFixture({ sizeBytes: 8 * MiB, content: 'random' })
    const { failures } = await pumpVhd(await openVhdStream(chunked(fx.vhd)), [createVhdDirectorySink(remote, `${base}/br.alias.vhd`, { compression: 'brotli' })])
    expect(failures.size).toBe(0)
    const reader = await openVhd(remote, `${base}/br.alias.vhd`)
    for (const i of [0, 3]) expected.set(i, Buffer.from((await reader.readBlock(i)).buffer))
    const sparse = sparseBlock()
    const text = Buffer.concat([Buffer.alloc(512, 0xff), Buffer.from('a compressible block of text. '.repeat(70000)).subarray(0, 2 * MiB)])
    await writeFile(join(remote.root, blockPath(`${base}/data/br.vhd`, 1)), encodeSparseBrotli(sparse, sectorRuns(sparse)))
    await writeFile(join(remote.root, blockPath(`${base}/data/br.vhd`, 2)), brotliCompressSync(text))
    expected.set(1, sparse).set(2, text)
  })

  it('lands a stored block in place and rebuilds a sparse one in the pool buffer; a zlib one gets its own', async () => {
    const pool = new VhdBlockPool({ margin: STORED_FRAME_MARGIN })
    const reader = await openVhd(remote, `${base}/br.alias.vhd`)
    for (let round = 0; round < 2; round++) {
      for (const [i, bytes] of expected) {
        const into = pool.acquire(FULL)
        into.fill(0xa5)
        const block = await reader.readBlock(i, undefined, into)
        expect(block.buffer.equals(bytes)).toBe(true)
        expect(block.buffer === into).toBe(i !== 2)
        pool.share(into, 0)
      }
    }
    expect(pool.allocated).toBe(1)
  })

  it('a pool without margins, or none at all, reads the same bytes', async () => {
    const reader = await openVhd(remote, `${base}/br.alias.vhd`)
    const pool = new VhdBlockPool()
    for (const [i, bytes] of expected) {
      const into = pool.acquire(FULL)
      const block = await reader.readBlock(i, undefined, into)
      expect(block.buffer.equals(bytes)).toBe(true)
      expect(block.buffer === into).toBe(i === 1)
      expect((await reader.readBlock(i)).buffer.equals(bytes)).toBe(true)
      pool.share(into, 0)
    }
  })

  it('the flattened stream is the same with the pool, its buffers reused', async () => {
    const chain = await openChain(remote, `${base}/br.alias.vhd`)
    const plain = await streamToBuffer(chain.vhdStream())
    const pool = new VhdBlockPool({ margin: STORED_FRAME_MARGIN })
    const chunks: Buffer[] = []
    for await (const chunk of chain.vhdStream({ pool }) as AsyncIterable<Buffer>) {
      chunks.push(Buffer.from(chunk))
      pool.done(chunk)
    }
    expect(Buffer.concat(chunks).equals(plain)).toBe(true)
    expect(pool.allocated).toBeLessThanOrEqual(5)
  })
})

/**
 * A chain's streams hold its VhdFiles open (Remote.openFile) for their duration: one open per file, one
 * positioned read per block (no read stream per block), every file closed when the stream ends or is
 * destroyed; a file replaced by a shorter one under a held chain is corrupt, not silently short.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { beforeAll, describe, expect, it } from 'vitest'
import type { LocalRemote } from '../../src/remotes/local.js'
import type { RemoteFile } from '../../src/remotes/remote.js'
import { VhdBlockPool } from '../../src/vhd/block-pool.js'
import { openChain } from '../../src/vhd/chain.js'
import { createVhdFileSink } from '../../src/vhd/file-sink.js'
import { pumpVhd } from '../../src/vhd/sink.js'
import { openVhdStream } from '../../src/vhd/stream-parser.js'
import { useTempDir } from '../helpers/tmp.js'
import { expectCode } from '../remotes/conformance.js'
import { chunked, makeFixture } from './fixtures.js'
import { localRemote } from './remote.js'

const MiB = 1024 * 1024
const tmp = useTempDir('bp-vhd-hold-')

/** Counts the files `remote.openFile` opened and closed, and the read streams opened. */
function spy(remote: LocalRemote): { opened: number; closed: number; streams: number } {
  const counts = { opened: 0, closed: 0, streams: 0 }
  const openFile = remote.openFile.bind(remote)
  remote.openFile = async (path, options) => {
    const file = await openFile(path, options)
    counts.opened++
    const counted: RemoteFile = {
      size: file.size,
      read: (...args) => file.read(...args),
      close: async () => {
        counts.closed++
        await file.close()
      },
    }
    return counted
  }
  remote.on('op', (e) => {
    if (e.op === 'createReadStream') counts.streams++
  })
  return counts
}

async function drain(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c)
  return Buffer.concat(chunks)
}

describe('VhdChain streams hold their VhdFiles', () => {
  let remote: LocalRemote
  const size = 12 * MiB
  const base = makeFixture({ sizeBytes: size, seed: 'hold-base' })
  const child = makeFixture({ sizeBytes: size, seed: 'hold-child', blocks: [1, 4], parentUuid: base.footer.uuid })
  const expected = Buffer.from(base.raw)
  for (const i of child.blocks) child.raw.copy(expected, i * 2 * MiB, i * 2 * MiB, (i + 1) * 2 * MiB)

  beforeAll(async () => {
    remote = await localRemote(join(tmp(), 'remote'))
    await pumpVhd(await openVhdStream(chunked(base.vhd)), [createVhdFileSink(remote, 'c/1.vhd')])
    await pumpVhd(await openVhdStream(chunked(child.vhd)), [createVhdFileSink(remote, 'c/2.vhd', { parent: { relativePath: '1.vhd', uuid: base.footer.uuid, timestamp: base.footer.timestamp } })])
  })

  it('opens each VhdFile once for a whole stream, reads no block through a read stream, closes them at the end', async () => {
    const chain = await openChain(remote, 'c/2.vhd')
    const counts = spy(remote)
    expect((await drain(chain.rawStream())).equals(expected)).toBe(true)
    expect(counts).toEqual({ opened: 2, closed: 2, streams: 0 })
    const flat = await drain(chain.vhdStream())
    expect(counts).toEqual({ opened: 4, closed: 4, streams: 0 })
    // the flattened VHD parses back to the chain's disk
    const parsed = await openVhdStream(chunked(flat))
    const raw = Buffer.alloc(size)
    for await (const block of parsed.blocks()) block.data.copy(raw, block.index * 2 * MiB)
    expect(raw.equals(expected)).toBe(true)
  })

  it('with a pool, reads blocks into its buffers and reuses those the consumer handed back: the same bytes', async () => {
    const chain = await openChain(remote, 'c/2.vhd')
    const pool = new VhdBlockPool({ maxFree: 8 })
    const copies: Buffer[] = []
    for await (const c of chain.vhdStream({ pool }) as AsyncIterable<Buffer>) {
      copies.push(Buffer.from(c)) // a copy, then the chunk goes back and may be overwritten by a later block
      pool.done(c)
    }
    expect(Buffer.concat(copies).equals(await drain(chain.vhdStream()))).toBe(true)
    // 6 blocks, 4 read ahead: fewer buffers than blocks
    expect(pool.allocated).toBeLessThan(6)
    expect(pool.allocated).toBeGreaterThan(0)
  })

  it('closes the files when the stream is destroyed midway', async () => {
    const chain = await openChain(remote, 'c/2.vhd')
    const counts = spy(remote)
    const stream = chain.vhdStream()
    const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()))
    let seen = 0
    for await (const c of stream as AsyncIterable<Buffer>) {
      seen += c.length
      if (seen > 3 * MiB) break // for await … break destroys the stream
    }
    await closed
    expect(counts.opened).toBe(2)
    expect(counts.closed).toBe(2)
  })

  it('a VhdFile replaced by a shorter file under the chain is E_VHD_CORRUPT', async () => {
    await pumpVhd(await openVhdStream(chunked(base.vhd)), [createVhdFileSink(remote, 'd/1.vhd')])
    const chain = await openChain(remote, 'd/1.vhd')
    await writeFile(join(remote.root, 'd/1.vhd'), base.vhd.subarray(0, 4 * MiB))
    await expectCode(drain(chain.vhdStream()), 'E_VHD_CORRUPT')
    const replaced = await openChain(remote, 'c/2.vhd')
    await replaced.hold()
    await writeFile(join(remote.root, 'c/1.vhd'), Buffer.alloc(0)) // truncated in place under a held handle
    await expectCode(replaced.readBlock(0), 'E_VHD_CORRUPT')
    await replaced.release()
  })
})

import { brotliDecompressSync } from 'node:zlib'
import { readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { buffer as streamToBuffer } from 'node:stream/consumers'
import { beforeAll, describe, expect, it } from 'vitest'
import { useTempDir } from '../helpers/tmp.js'
import { createVhdDirectorySink } from '../../src/vhd/directory-sink.js'
import { createVhdFileSink } from '../../src/vhd/file-sink.js'
import { checkChain, openChain } from '../../src/vhd/chain.js'
import { openVhd } from '../../src/vhd/open.js'
import { pumpVhd } from '../../src/vhd/sink.js'
import { openVhdStream } from '../../src/vhd/stream-parser.js'
import { brotliStoredHeader, compressChunk, decompressChunk } from '../../src/vhd/compression.js'
import { chunked, makeFixture } from './fixtures.js'
import type { LocalRemote } from '../../src/remotes/local.js'
import { localRemote } from './remote.js'
import { qemuCompare, vhdiinfo } from './tools.js'

const MiB = 1024 * 1024
const tmp = useTempDir('bp-vhd-dir-')

describe('compression envelope', () => {
  it('stores incompressible data in a brotli stream any decoder reads, and compresses text', async () => {
    for (const len of [1, 512, 65537, 2 * MiB + 512]) {
      const data = Buffer.alloc(len)
      for (let i = 0; i < len; i++) data[i] = (i * 7919 + (i >> 9)) & 255
      const framed = Buffer.concat([brotliStoredHeader(len), data, Buffer.from([3])])
      expect(brotliDecompressSync(framed).equals(data)).toBe(true)
    }
    const random = makeFixture({ sizeBytes: 2 * MiB, content: 'random' })
    const r = await compressChunk(random.raw, 'brotli')
    expect(r.stored).toBe(true)
    expect(brotliDecompressSync(Buffer.concat(r.parts)).equals(random.raw)).toBe(true)
    const text = makeFixture({ sizeBytes: 2 * MiB, content: 'pattern' })
    const t = await compressChunk(text.raw, 'brotli')
    expect(t.stored).toBe(false)
    expect(t.sizeBytes).toBeLessThan(text.raw.length / 10)
    expect((await decompressChunk(Buffer.concat(t.parts), 'brotli', 'x', text.raw.length)).equals(text.raw)).toBe(true)
  })
})

describe('VhdDirectory sink, readers and chains', () => {
  let remote: LocalRemote
  beforeAll(async () => {
    remote = await localRemote(join(tmp(), 'remote'))
  })

  const cases = [
    { name: 'odd', sizeBytes: 5 * MiB + 1536, content: 'random' as const },
    { name: 'sparse', sizeBytes: 2100 * MiB, blocks: [0, 999, 1000, 1049], content: 'pattern' as const },
    { name: 'zeros', sizeBytes: 4 * MiB, content: 'zeros' as const },
  ]
  for (const c of cases) {
    it(`fans ${c.name} out to VhdFile + VhdDirectory (none, brotli) and reads all three back`, async () => {
      const fx = makeFixture(c)
      const vhd = await openVhdStream(chunked(fx.vhd))
      const base = `vm/vdis/job/${c.name}`
      const sinks = [
        createVhdFileSink(remote, `${base}/file.vhd`),
        createVhdDirectorySink(remote, `${base}/plain.alias.vhd`),
        createVhdDirectorySink(remote, `${base}/br.alias.vhd`, { compression: 'brotli' }),
      ]
      const { failures } = await pumpVhd(vhd, sinks)
      expect(failures.size).toBe(0)
      expect((await readFile(join(remote.root, base, 'plain.alias.vhd'), 'utf8'))).toBe('data/plain.vhd')
      expect(JSON.parse(await readFile(join(remote.root, base, 'data/br.vhd/chunk-filters.json'), 'utf8'))).toEqual(['brotli'])
      if (c.blocks !== undefined) expect(await readdir(join(remote.root, base, 'data/plain.vhd/blocks/1'))).toEqual(['0', '49'])
      for (const p of ['file.vhd', 'plain.alias.vhd', 'br.alias.vhd']) {
        const chain = await openChain(remote, `${base}/${p}`)
        expect(chain.vhds).toHaveLength(1)
        expect(chain.top.footer.uuid).toBe(fx.footer.uuid)
        expect(chain.blockIndexes()).toEqual([...fx.blocks].sort((a, b) => a - b))
        if (c.sizeBytes < 100 * MiB) expect((await streamToBuffer(chain.rawStream())).equals(fx.raw)).toBe(true)
        else expect((await chain.readRange(999 * 2 * MiB - 100, 200)).equals(fx.raw.subarray(999 * 2 * MiB - 100, 999 * 2 * MiB + 100))).toBe(true)
        // the flattened stream is a valid VHD again
        const again = await openVhdStream(chain.vhdStream())
        let n = 0
        for await (const _ of again.blocks()) n++
        expect(n).toBe(fx.blocks.length)
      }
    })
  }

  it('reports each block to onBlockWritten only once its file is written (its buffer may then be reused)', async () => {
    const fx = makeFixture({ sizeBytes: 16 * MiB, blocks: [0, 1, 4, 7], content: 'random' })
    const base = 'vm/vdis/job/release'
    const reported: number[] = []
    for (const compression of ['none', 'brotli'] as const) {
      const sink = createVhdDirectorySink(remote, `${base}/${compression}.alias.vhd`, {
        compression,
        onBlockWritten: (block) => {
          reported.push(block.index)
          block.buffer.fill(0xee) // what reuse does: must not reach the stored block
        },
      })
      const { failures } = await pumpVhd(await openVhdStream(chunked(fx.vhd)), [sink])
      expect(failures.size).toBe(0)
      const chain = await openChain(remote, `${base}/${compression}.alias.vhd`)
      expect((await streamToBuffer(chain.rawStream())).equals(fx.raw)).toBe(true)
    }
    expect(reported.sort((a, b) => a - b)).toEqual([0, 0, 1, 1, 4, 4, 7, 7])
  })

  it('builds a 3-level chain (file, directory, brotli directory): chain read, flattened VHD, vhdiinfo, checkChain', async () => {
    const size = 12 * MiB
    const base = makeFixture({ sizeBytes: size, seed: 'base', blocks: [0, 1, 2, 3, 4, 5] })
    const d1 = makeFixture({ sizeBytes: size, seed: 'd1', blocks: [1, 3], parentUuid: base.footer.uuid })
    const d2 = makeFixture({ sizeBytes: size, seed: 'd2', blocks: [3, 5], parentUuid: d1.footer.uuid })
    const dir = 'chain/vdis/job/vdi'
    await pumpVhd(await openVhdStream(chunked(base.vhd)), [createVhdFileSink(remote, `${dir}/20260101T000000Z.vhd`)])
    await pumpVhd(await openVhdStream(chunked(d1.vhd)), [
      createVhdDirectorySink(remote, `${dir}/20260102T000000Z.alias.vhd`, { parent: { relativePath: '20260101T000000Z.vhd', uuid: base.footer.uuid, timestamp: base.footer.timestamp } }),
    ])
    await pumpVhd(await openVhdStream(chunked(d2.vhd)), [
      createVhdDirectorySink(remote, `${dir}/20260103T000000Z.alias.vhd`, { compression: 'brotli', parent: { relativePath: '20260102T000000Z.alias.vhd', uuid: d1.footer.uuid, timestamp: d1.footer.timestamp } }),
    ])
    const expected = Buffer.from(base.raw)
    for (const fx of [d1, d2]) for (const i of fx.blocks) fx.raw.copy(expected, i * 2 * MiB, i * 2 * MiB, (i + 1) * 2 * MiB)
    const chain = await openChain(remote, `${dir}/20260103T000000Z.alias.vhd`)
    expect(chain.vhds.map((v) => v.kind)).toEqual(['directory', 'directory', 'file'])
    expect((await streamToBuffer(chain.rawStream())).equals(expected)).toBe(true)
    expect((await chain.readRange(3 * 2 * MiB - 10, 20)).equals(expected.subarray(3 * 2 * MiB - 10, 3 * 2 * MiB + 10))).toBe(true)
    const report = await checkChain(remote, `${dir}/20260103T000000Z.alias.vhd`)
    expect(report.paths).toHaveLength(3)
    expect(report.warnings).toEqual([])
    // flattened VHD → file → qemu-img compare with the expected raw disk
    const flat = join(tmp(), 'flat.vhd')
    await writeFile(flat, await streamToBuffer(chain.vhdStream()))
    await writeFile(join(tmp(), 'flat.raw'), expected)
    await qemuCompare(flat, join(tmp(), 'flat.raw'))
    expect(await vhdiinfo(flat)).toMatch(/Disk type\s*:\s*Dynamic/)
  })

  it('checkChain rejects a missing parent and a wrong parent UUID', async () => {
    const base = makeFixture({ sizeBytes: 4 * MiB, seed: 'b2' })
    const child = makeFixture({ sizeBytes: 4 * MiB, seed: 'c2', blocks: [0], parentUuid: base.footer.uuid })
    const dir = 'broken/vdi'
    await pumpVhd(await openVhdStream(chunked(child.vhd)), [createVhdFileSink(remote, `${dir}/child.vhd`, { parent: { relativePath: 'base.vhd', uuid: base.footer.uuid, timestamp: 0 } })])
    await expect(checkChain(remote, `${dir}/child.vhd`)).rejects.toMatchObject({ code: 'E_VHD_CORRUPT', fields: { structure: 'chain', field: 'parentUnicodeName' } })
    const other = makeFixture({ sizeBytes: 4 * MiB, seed: 'other' })
    await pumpVhd(await openVhdStream(chunked(other.vhd)), [createVhdFileSink(remote, `${dir}/base.vhd`)])
    await expect(checkChain(remote, `${dir}/child.vhd`)).rejects.toMatchObject({ code: 'E_VHD_CORRUPT', fields: { structure: 'chain', field: 'parentUuid' } })
    expect((await openVhd(remote, `${dir}/base.vhd`)).footer.uuid).toBe(other.footer.uuid)
  })
})

import { readFile, writeFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { useTempDir } from '../helpers/tmp.js'
import { createVhdFileSink } from '../../src/vhd/file-sink.js'
import { pumpVhd } from '../../src/vhd/sink.js'
import { openVhdStream } from '../../src/vhd/stream-parser.js'
import { decodeFooter } from '../../src/vhd/footer.js'
import { chunked, makeFixture } from './fixtures.js'
import type { LocalRemote } from '../../src/remotes/local.js'
import { localRemote } from './remote.js'
import { convertToVpc, qemuCompare, qemuInfo, vhdiinfo } from './tools.js'

const MiB = 1024 * 1024
const tmp = useTempDir('bp-vhd-file-')

describe('VhdFile sink', () => {
  let remote: LocalRemote
  beforeAll(async () => {
    remote = await localRemote(join(tmp(), 'remote'))
  })

  const cases = [
    { name: 'tiny', sizeBytes: 512 },
    { name: 'odd-size', sizeBytes: 5 * MiB + 1536 },
    { name: 'sparse', sizeBytes: 20 * MiB, blocks: [1, 7, 9] },
    { name: 'full', sizeBytes: 8 * MiB },
    { name: 'one-block', sizeBytes: 2 * MiB },
    { name: 'partial-last', sizeBytes: 3 * MiB },
    { name: 'reordered', sizeBytes: 10 * MiB, gapSectors: 3, reverseOffsets: true },
    { name: 'empty', sizeBytes: 10 * MiB, blocks: [] },
  ]
  for (const c of cases) {
    it(`writes ${c.name}: qemu-img compare and vhdiinfo accept it`, async () => {
      const fx = makeFixture(c)
      const vhd = await openVhdStream(chunked(fx.vhd))
      const path = `vdis/${c.name}.vhd`
      const { results, failures } = await pumpVhd(vhd, [createVhdFileSink(remote, path)])
      expect(failures.size).toBe(0)
      expect([...results.values()][0]?.blocks).toBe(fx.blocks.length)
      const abs = join(remote.root, path)
      const rawPath = join(tmp(), `${c.name}.raw`)
      await writeFile(rawPath, fx.raw)
      expect((await qemuInfo(abs))['virtual-size']).toBe(c.sizeBytes)
      await qemuCompare(abs, rawPath)
      const info = await vhdiinfo(abs)
      expect(info).toMatch(/Disk type\s*:\s*Dynamic/)
      expect(info).toContain(fx.footer.uuid)
      // the written file parses again as a stream, footer copy included
      const again = await openVhdStream(chunked(await readFile(abs)))
      let count = 0
      for await (const _ of again.blocks()) count++
      expect(count).toBe(fx.blocks.length)
      expect(await readdir(join(remote.root, 'vdis'))).not.toContainEqual(expect.stringMatching(/\.tmp$/))
    })
  }

  it('reads what qemu-img writes (independent producer) and writes it back identical in content', async () => {
    const fx = makeFixture({ sizeBytes: 9 * MiB + 512, blocks: [0, 2, 4] })
    const rawPath = join(tmp(), 'q.raw')
    const qPath = join(tmp(), 'q.vhd')
    await writeFile(rawPath, fx.raw)
    await convertToVpc(rawPath, qPath)
    const vhd = await openVhdStream(chunked(await readFile(qPath)))
    await pumpVhd(vhd, [createVhdFileSink(remote, 'q/copy.vhd')])
    await qemuCompare(join(remote.root, 'q/copy.vhd'), rawPath)
  })

  it('writes a differencing file with parent UUID, timestamp, name and W2KU locator', async () => {
    const fx = makeFixture({ sizeBytes: 6 * MiB, blocks: [1], parentUuid: '11111111-2222-3333-4444-555555555555' })
    const vhd = await openVhdStream(chunked(fx.vhd))
    const parent = { relativePath: '20260101T000000Z.vhd', uuid: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', timestamp: 12345 }
    await pumpVhd(vhd, [createVhdFileSink(remote, 'diff/child.vhd', { parent })])
    const buf = await readFile(join(remote.root, 'diff/child.vhd'))
    expect(decodeFooter(buf).diskType).toBe(4)
    const info = await vhdiinfo(join(remote.root, 'diff/child.vhd'))
    expect(info).toMatch(/Disk type\s*:\s*Differential/)
    expect(info).toContain('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee')
    expect(info).toContain('20260101T000000Z.vhd')
  })
})

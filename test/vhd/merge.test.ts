import { join } from 'node:path'
import { buffer as streamToBuffer } from 'node:stream/consumers'
import { beforeAll, describe, expect, it } from 'vitest'
import { useTempDir } from '../helpers/tmp.js'
import { openChain } from '../../src/vhd/chain.js'
import type { ChunkCompression } from '../../src/vhd/compression.js'
import { createVhdDirectorySink } from '../../src/vhd/directory-sink.js'
import { createVhdFileSink } from '../../src/vhd/file-sink.js'
import { mergeStatePath, mergeVhd } from '../../src/vhd/merge.js'
import { pumpVhd, type VhdSink } from '../../src/vhd/sink.js'
import { openVhdStream } from '../../src/vhd/stream-parser.js'
import { chunked, makeFixture, type Fixture } from './fixtures.js'
import type { LocalRemote } from '../../src/remotes/local.js'
import { localRemote } from './remote.js'

const MiB = 1024 * 1024
const tmp = useTempDir('bp-vhd-merge-')
type Kind = 'file' | ChunkCompression

function name(ts: number, kind: Kind): string {
  return kind === 'file' ? `2026010${ts}T000000Z.vhd` : `2026010${ts}T000000Z.alias.vhd`
}

describe('mergeVhd', () => {
  let remote: LocalRemote
  beforeAll(async () => {
    remote = await localRemote(join(tmp(), 'remote'))
  })

  async function write(dir: string, fx: Fixture, path: string, kind: Kind, parent?: { fx: Fixture; path: string }): Promise<void> {
    const p = parent === undefined ? {} : { parent: { relativePath: parent.path, uuid: parent.fx.footer.uuid, timestamp: parent.fx.footer.timestamp } }
    const sink: VhdSink = kind === 'file' ? createVhdFileSink(remote, `${dir}/${path}`, p) : createVhdDirectorySink(remote, `${dir}/${path}`, { ...p, compression: kind })
    await pumpVhd(await openVhdStream(chunked(fx.vhd)), [sink])
  }

  /** base (6 blocks) ← child (blocks 1,3,6 — the child grew the disk) ← grandchild (block 3) */
  async function setup(dir: string, kinds: [Kind, Kind, Kind]) {
    const base = makeFixture({ sizeBytes: 12 * MiB, seed: `${dir}-base` })
    const child = makeFixture({ sizeBytes: 14 * MiB, seed: `${dir}-child`, blocks: [1, 3, 6], parentUuid: base.footer.uuid })
    const grand = makeFixture({ sizeBytes: 14 * MiB, seed: `${dir}-grand`, blocks: [3], parentUuid: child.footer.uuid })
    const [b, c, g] = [name(1, kinds[0]), name(2, kinds[1]), name(3, kinds[2])]
    await write(dir, base, b, kinds[0])
    await write(dir, child, c, kinds[1], { fx: base, path: b })
    await write(dir, grand, g, kinds[2], { fx: child, path: c })
    const expected = Buffer.alloc(14 * MiB)
    base.raw.copy(expected)
    for (const i of child.blocks) child.raw.copy(expected, i * 2 * MiB, i * 2 * MiB, (i + 1) * 2 * MiB)
    const before = await streamToBuffer((await openChain(remote, `${dir}/${g}`)).rawStream())
    return { base, child, grand, b, c, g, expectedChild: expected, before }
  }

  const combos: { kinds: [Kind, Kind, Kind]; mode: 'inplace' | 'rewrite' }[] = [
    { kinds: ['none', 'none', 'none'], mode: 'inplace' },
    { kinds: ['brotli', 'brotli', 'brotli'], mode: 'inplace' },
    { kinds: ['none', 'brotli', 'none'], mode: 'inplace' },
    { kinds: ['file', 'file', 'file'], mode: 'rewrite' },
    { kinds: ['file', 'brotli', 'none'], mode: 'rewrite' },
    { kinds: ['none', 'file', 'file'], mode: 'rewrite' },
  ]
  for (const { kinds, mode } of combos) {
    for (const crash of [false, true]) {
      it(`merges ${kinds[1]} into ${kinds[0]} (${mode})${crash ? ' after a crash, resumed' : ''}: the chain reads the same`, async () => {
        const dir = `m-${kinds.join('-')}-${crash}`
        const s = await setup(dir, kinds)
        if (crash) {
          await expect(mergeVhd(remote, `${dir}/${s.b}`, `${dir}/${s.c}`, { crashAfterBlocks: 2, stateEveryBlocks: 1 })).rejects.toThrow(/simulated crash/)
          expect(await remote.exists(mergeStatePath(`${dir}/${s.b}`))).toBe(true)
        }
        const result = await mergeVhd(remote, `${dir}/${s.b}`, `${dir}/${s.c}`)
        expect(result).toMatchObject({ mode, resumed: crash, mergedBlocks: 3 })
        expect(await remote.exists(mergeStatePath(`${dir}/${s.b}`))).toBe(false)
        expect(await remote.exists(`${dir}/${s.b}`)).toBe(false)
        const merged = await openChain(remote, `${dir}/${s.c}`)
        expect(merged.vhds).toHaveLength(1)
        expect(merged.top.footer.uuid).toBe(s.child.footer.uuid)
        expect(merged.top.footer.diskType).toBe(3)
        expect(merged.virtualSizeBytes).toBe(14 * MiB)
        expect((await streamToBuffer(merged.rawStream())).equals(s.expectedChild)).toBe(true)
        // the grandchild still chains to the merged VHD and reads the same as before
        const chain = await openChain(remote, `${dir}/${s.g}`)
        expect(chain.vhds).toHaveLength(2)
        expect((await streamToBuffer(chain.rawStream())).equals(s.before)).toBe(true)
        // nothing left behind: only the two VHDs (and the data dirs they use)
        const left = (await remote.list(dir, { includeHidden: true })).map((e) => e.path).filter((p) => !p.startsWith('data'))
        expect(left.sort()).toEqual([s.c, s.g].sort())
        if (kinds.some((k) => k !== 'file')) {
          const dataDirs = (await remote.list(`${dir}/data`)).map((e) => e.path)
          expect(dataDirs).toHaveLength([s.c, s.g].filter((p) => p.endsWith('.alias.vhd')).length)
        }
      })
    }
  }

  it('refuses to merge a child into a VHD that is not its parent', async () => {
    const s = await setup('wrong', ['none', 'none', 'none'])
    await expect(mergeVhd(remote, `wrong/${s.b}`, `wrong/${s.g}`)).rejects.toMatchObject({ code: 'E_VHD_CORRUPT', fields: { structure: 'chain', field: 'parentUuid' } })
    expect(await remote.exists(mergeStatePath(`wrong/${s.b}`))).toBe(false)
  })
})

/**
 * Corrupt corpus: each damaged input is rejected with E_VHD_CORRUPT naming the structure and field, and
 * nothing is published (no final file, no alias, no data directory, no temporary left).
 */
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { useTempDir } from '../helpers/tmp.js'
import type { LocalRemote } from '../../src/remotes/local.js'
import { vhdChecksum } from '../../src/vhd/checksum.js'
import { createVhdDirectorySink } from '../../src/vhd/directory-sink.js'
import { createVhdFileSink } from '../../src/vhd/file-sink.js'
import { openChain } from '../../src/vhd/chain.js'
import { openVhd } from '../../src/vhd/open.js'
import { pumpVhd } from '../../src/vhd/sink.js'
import { openVhdStream } from '../../src/vhd/stream-parser.js'
import { blockPath } from '../../src/vhd/directory-sink.js'
import { chunked, makeFixture } from './fixtures.js'
import { localRemote } from './remote.js'

const MiB = 1024 * 1024
const tmp = useTempDir('bp-vhd-corrupt-')
const BAT = 1536
const BLOCK0 = 2048 // first block after a 1-sector BAT (≤ 128 entries)

function fixFooter(buf: Buffer, at = 0): void {
  buf.writeUInt32BE(vhdChecksum(buf.subarray(at, at + 512), 64), at + 64)
}
function fixHeader(buf: Buffer): void {
  buf.writeUInt32BE(vhdChecksum(buf.subarray(512, 1536), 36), 512 + 36)
}
/** applies the same change to head and trailing footers */
function patchFooters(buf: Buffer, fn: (footer: Buffer) => void): void {
  for (const at of [0, buf.length - 512]) {
    const f = buf.subarray(at, at + 512)
    fn(f)
    fixFooter(buf, at)
  }
}

interface Case {
  name: string
  mutate: (vhd: Buffer) => Buffer
  structure: string
  field: string | RegExp
  offset?: number
}

const base = () => makeFixture({ sizeBytes: 8 * MiB, blocks: [0, 1, 3], seed: 'corrupt' })

const cases: Case[] = [
  { name: 'bad footer cookie', mutate: (b) => (b.write('conectiX', 0, 'latin1'), b), structure: 'footer', field: 'cookie', offset: 0 },
  { name: 'bad footer checksum', mutate: (b) => ((b[100] = 1), b), structure: 'footer', field: 'checksum', offset: 64 },
  { name: 'unknown disk type', mutate: (b) => (patchFooters(b, (f) => f.writeUInt32BE(7, 60)), b), structure: 'footer', field: 'diskType', offset: 60 },
  { name: 'bad header cookie', mutate: (b) => (b.write('cxsparsE', 512, 'latin1'), b), structure: 'header', field: 'cookie', offset: 512 },
  { name: 'bad header checksum', mutate: (b) => ((b[600] = 7), b), structure: 'header', field: 'checksum', offset: 548 },
  { name: 'block size not a power of two', mutate: (b) => (b.writeUInt32BE(3 * MiB, 512 + 32), fixHeader(b), b), structure: 'header', field: 'blockSize', offset: 544 },
  { name: 'BAT smaller than the disk', mutate: (b) => (b.writeUInt32BE(2, 512 + 28), fixHeader(b), b), structure: 'header', field: 'maxTableEntries', offset: 540 },
  { name: 'differencing without parent UUID', mutate: (b) => (patchFooters(b, (f) => f.writeUInt32BE(4, 60)), b), structure: 'header', field: 'parentUuid', offset: 552 },
  {
    name: 'BAT entry past the disk',
    mutate: (b) => {
      b.writeUInt32BE(8, 512 + 28) // 8 entries for a 4-block disk: legal, but entry 4 must stay unused
      fixHeader(b)
      b.fill(0xff, BAT + 16, BAT + 32)
      b.writeUInt32BE(b.length / 512 - 1, BAT + 16)
      return b
    },
    structure: 'bat',
    field: 'entry[4]',
    offset: BAT + 16,
  },
  { name: 'overlapping blocks', mutate: (b) => (b.writeUInt32BE(b.readUInt32BE(BAT) + 8, BAT + 4), b), structure: 'bat', field: /^entry\[(0|1)\]$/ },
  { name: 'block overlapping the BAT', mutate: (b) => (b.writeUInt32BE(BAT / 512, BAT), b), structure: 'bat', field: 'entry[0]' },
  { name: 'BAT pointing past the end', mutate: (b) => (b.writeUInt32BE(b.length / 512 + 100, BAT + 12), b), structure: 'block', field: 'block[3]' },
  { name: 'truncated mid-block', mutate: (b) => b.subarray(0, BLOCK0 + 512 + 2 * 1024 * 1024 + 1000), structure: 'block', field: 'block[1]' },
  { name: 'truncated before the trailing footer', mutate: (b) => b.subarray(0, b.length - 512), structure: 'stream', field: 'footer' },
  { name: 'trailing footer differs', mutate: (b) => (b.write('ffff', b.length - 512 + 68, 'hex'), fixFooter(b, b.length - 512), b), structure: 'footer', field: 'trailing' },
  { name: 'trailing footer damaged', mutate: (b) => ((b[b.length - 10] = 9), b), structure: 'footer', field: 'checksum' },
]

describe('corrupt corpus', () => {
  let remote: LocalRemote
  beforeAll(async () => {
    remote = await localRemote(join(tmp(), 'remote'))
  })

  for (const c of cases) {
    it(`rejects ${c.name} and publishes nothing`, async () => {
      const vhd = c.mutate(Buffer.from(base().vhd))
      const dir = c.name.replaceAll(' ', '-')
      const attempt = async () => {
        const stream = await openVhdStream(chunked(vhd))
        await pumpVhd(stream, [createVhdFileSink(remote, `${dir}/x.vhd`), createVhdDirectorySink(remote, `${dir}/y.alias.vhd`, { compression: 'brotli' })])
      }
      const error: unknown = await attempt().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error).toMatchObject({ code: 'E_VHD_CORRUPT', fields: { structure: c.structure } })
      const fields = (error as { fields: { field: string; offset: number } }).fields
      if (typeof c.field === 'string') expect(fields.field).toBe(c.field)
      else expect(fields.field).toMatch(c.field)
      if (c.offset !== undefined) expect(fields.offset).toBe(c.offset)
      expect(typeof fields.offset).toBe('number')
      const left = (await remote.exists(dir)) ? await remote.list(dir, { recursive: true, includeHidden: true }) : []
      expect(left.filter((e) => !e.isDirectory)).toEqual([])
    })
  }

  it('rejects a VhdFile on the remote whose BAT points past the end of the file', async () => {
    const fx = base()
    const buf = Buffer.from(fx.vhd)
    buf.writeUInt32BE(buf.length / 512 + 100, BAT + 12)
    await writeFile(join(remote.root, 'past-end.vhd'), buf)
    await expect(openVhd(remote, 'past-end.vhd')).rejects.toMatchObject({ code: 'E_VHD_CORRUPT', fields: { structure: 'bat', field: 'entry[3]', offset: BAT + 12 } })
  })

  it('rejects a VhdDirectory with a missing or damaged block file, and a bad alias', async () => {
    const fx = base()
    await pumpVhd(await openVhdStream(chunked(fx.vhd)), [createVhdDirectorySink(remote, 'dir/a.alias.vhd', { compression: 'brotli' })])
    const vhd = await openVhd(remote, 'dir/a.alias.vhd')
    await writeFile(join(remote.root, blockPath('dir/data/a.vhd', 1)), (await readFile(join(remote.root, blockPath('dir/data/a.vhd', 1)))).subarray(0, 1000))
    await expect(vhd.readBlock(1)).rejects.toMatchObject({ code: 'E_VHD_CORRUPT', fields: { structure: 'directory', field: 'blocks/1' } })
    await remote.unlink(blockPath('dir/data/a.vhd', 3))
    await expect(vhd.readBlock(3)).rejects.toMatchObject({ code: 'E_VHD_CORRUPT', fields: { structure: 'directory', field: 'blocks/3' } })
    await remote.writeFile('dir/b.alias.vhd', 'a.alias.vhd')
    await expect(openVhd(remote, 'dir/b.alias.vhd')).rejects.toMatchObject({ code: 'E_VHD_CORRUPT', fields: { structure: 'alias', field: 'target' } })
    await remote.writeFile('dir/c.alias.vhd', '../../../etc')
    await expect(openVhd(remote, 'dir/c.alias.vhd')).rejects.toMatchObject({ code: 'E_VHD_CORRUPT', fields: { structure: 'alias' } })
  })

  it('rejects a chain whose child names the wrong parent', async () => {
    const parent = makeFixture({ sizeBytes: 4 * MiB, seed: 'p' })
    const child = makeFixture({ sizeBytes: 4 * MiB, seed: 'c', blocks: [1], parentUuid: '99999999-9999-4999-8999-999999999999' })
    await pumpVhd(await openVhdStream(chunked(parent.vhd)), [createVhdFileSink(remote, 'wp/p.vhd')])
    await pumpVhd(await openVhdStream(chunked(child.vhd)), [createVhdFileSink(remote, 'wp/c.vhd', { parent: { relativePath: 'p.vhd', uuid: '99999999-9999-4999-8999-999999999999', timestamp: 0 } })])
    await expect(openChain(remote, 'wp/c.vhd')).rejects.toMatchObject({ code: 'E_VHD_CORRUPT', fields: { structure: 'chain', field: 'parentUuid' } })
  })

  it('the stream is cancelled by its signal', async () => {
    const ac = new AbortController()
    const stream = await openVhdStream(chunked(base().vhd, 4096), { signal: ac.signal })
    const blocks = stream.blocks()
    await blocks.next()
    ac.abort()
    await expect(blocks.next()).rejects.toMatchObject({ code: 'E_CANCELLED' })
  })
})

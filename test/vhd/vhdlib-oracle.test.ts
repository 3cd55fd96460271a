/**
 * Xen Orchestra's own vhd-lib as an oracle, both ways: it opens and reads the VhdFile / VhdDirectory
 * (plain and brotli) and chains we write, its stream parser accepts our flattened stream, and we read the
 * VhdDirectory (brotli) and VhdFile stream it writes. vhd-lib is a devDependency installed with two local
 * stand-ins for packages missing from the registry mirror (test/shims, see docs/vhd.md).
 */
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { buffer as streamToBuffer } from 'node:stream/consumers'
import { beforeAll, describe, expect, it } from 'vitest'
import { useTempDir } from '../helpers/tmp.js'
import type { LocalRemote } from '../../src/remotes/local.js'
import { openChain } from '../../src/vhd/chain.js'
import { createVhdDirectorySink } from '../../src/vhd/directory-sink.js'
import { createVhdFileSink } from '../../src/vhd/file-sink.js'
import { openVhd } from '../../src/vhd/open.js'
import { pumpVhd } from '../../src/vhd/sink.js'
import { openVhdStream } from '../../src/vhd/stream-parser.js'
import { chunked, makeFixture } from './fixtures.js'
import { localRemote } from './remote.js'

// minimal shapes of the untyped CommonJS API we call
interface LibVhd {
  footer: { uuid: Buffer; currentSize: number; diskType: number }
  header: { parentUuid: Buffer; maxTableEntries: number }
  readBlockAllocationTable(): Promise<void>
  containsBlock(id: number): boolean
  readBlock(id: number): Promise<{ data: Buffer }>
  rawContent(): Readable
  stream(): Readable
}
interface Disposable<T> {
  value: T
  dispose: () => unknown
}
interface LibDirectory {
  footer: unknown
  header: unknown
  writeEntireBlock(block: { id: number; buffer: Buffer }): Promise<void>
  writeFooter(): Promise<void>
  writeHeader(): Promise<void>
  writeBlockAllocationTable(): Promise<void>
}
interface VhdLib {
  openVhd(handler: unknown, path: string): Promise<Disposable<LibVhd>>
  checkVhdChain(handler: unknown, path: string): Promise<void>
  VhdDirectory: { create(handler: unknown, path: string, opts: { compression?: string }): Promise<Disposable<LibDirectory>> }
  VhdSynthetic: { fromVhdChain(handler: unknown, path: string): Promise<Disposable<LibVhd>> }
}
type ParseItem = { type: string; footer?: unknown; header?: unknown; id?: number; buffer?: Buffer }

const require = createRequire(import.meta.url)
const vhdLib = require('vhd-lib') as VhdLib
const { parseVhdStream } = require('vhd-lib/parseVhdStream.js') as { parseVhdStream: (s: Readable) => AsyncIterable<ParseItem> }
const { getHandler } = require('@xen-orchestra/fs') as { getHandler: (r: { url: string }) => { sync(): Promise<void>; forget(): Promise<void> } }

const MiB = 1024 * 1024
const tmp = useTempDir('bp-vhd-oracle-')
const uuidText = (b: Buffer): string => b.toString('hex').replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5')

describe('vhd-lib oracle', () => {
  let remote: LocalRemote
  let handler: { sync(): Promise<void> }
  beforeAll(async () => {
    remote = await localRemote(join(tmp(), 'remote'))
    const h = getHandler({ url: `file://${remote.root}` })
    await h.sync()
    handler = h
  })

  async function readWithVhdLib(path: string, sizeBytes: number): Promise<Buffer> {
    const d = await vhdLib.openVhd(handler, path)
    try {
      await d.value.readBlockAllocationTable()
      expect(d.value.footer.currentSize).toBe(sizeBytes)
      return (await streamToBuffer(d.value.rawContent())).subarray(0, sizeBytes)
    } finally {
      await d.dispose()
    }
  }

  it('vhd-lib reads the VhdFile and VhdDirectories (plain, brotli) we write', async () => {
    const fx = makeFixture({ sizeBytes: 9 * MiB + 512, blocks: [0, 2, 4], content: 'pattern', seed: 'o1' })
    await pumpVhd(await openVhdStream(chunked(fx.vhd)), [
      createVhdFileSink(remote, 'a/f.vhd'),
      createVhdDirectorySink(remote, 'a/d.alias.vhd'),
      createVhdDirectorySink(remote, 'a/b.alias.vhd', { compression: 'brotli' }),
    ])
    // random (stored-envelope) blocks too
    const rnd = makeFixture({ sizeBytes: 4 * MiB, seed: 'o2' })
    await pumpVhd(await openVhdStream(chunked(rnd.vhd)), [createVhdDirectorySink(remote, 'a/r.alias.vhd', { compression: 'brotli' })])
    for (const p of ['a/f.vhd', 'a/d.alias.vhd', 'a/b.alias.vhd']) expect((await readWithVhdLib(p, fx.raw.length)).equals(fx.raw)).toBe(true)
    expect((await readWithVhdLib('a/r.alias.vhd', rnd.raw.length)).equals(rnd.raw)).toBe(true)
  })

  it('vhd-lib follows and reads a chain we write (file ← brotli directory)', async () => {
    const base = makeFixture({ sizeBytes: 6 * MiB, seed: 'cb' })
    const child = makeFixture({ sizeBytes: 6 * MiB, seed: 'cc', blocks: [1], parentUuid: base.footer.uuid })
    await pumpVhd(await openVhdStream(chunked(base.vhd)), [createVhdFileSink(remote, 'c/20260101T000000Z.vhd')])
    await pumpVhd(await openVhdStream(chunked(child.vhd)), [
      createVhdDirectorySink(remote, 'c/20260102T000000Z.alias.vhd', { compression: 'brotli', parent: { relativePath: '20260101T000000Z.vhd', uuid: base.footer.uuid, timestamp: base.footer.timestamp } }),
    ])
    await vhdLib.checkVhdChain(handler, 'c/20260102T000000Z.alias.vhd')
    const synthetic = await vhdLib.VhdSynthetic.fromVhdChain(handler, 'c/20260102T000000Z.alias.vhd')
    try {
      await synthetic.value.readBlockAllocationTable()
      const expected = Buffer.from(base.raw)
      child.raw.copy(expected, 2 * MiB, 2 * MiB, 4 * MiB)
      expect((await streamToBuffer(synthetic.value.rawContent())).equals(expected)).toBe(true)
      expect(uuidText(synthetic.value.footer.uuid)).toBe(child.footer.uuid)
    } finally {
      await synthetic.dispose()
    }
  })

  it('vhd-lib parses our flattened chain stream', async () => {
    const chain = await openChain(remote, 'c/20260102T000000Z.alias.vhd')
    const ids: number[] = []
    for await (const item of parseVhdStream(chain.vhdStream())) if (item.type === 'block') ids.push(item.id ?? -1)
    expect(ids).toEqual([0, 1, 2])
  })

  it('we read the brotli VhdDirectory and the VhdFile stream vhd-lib writes', async () => {
    const fx = makeFixture({ sizeBytes: 7 * MiB, blocks: [0, 3], content: 'pattern', seed: 'w' })
    const created = await vhdLib.VhdDirectory.create(handler, 'w/data/x.vhd', { compression: 'brotli' })
    const dir = created.value
    for await (const item of parseVhdStream(Readable.from(chunked(fx.vhd), { objectMode: false }))) {
      if (item.type === 'footer') dir.footer = item.footer
      else if (item.type === 'header') dir.header = item.header
      else if (item.type === 'block') await dir.writeEntireBlock({ id: item.id ?? -1, buffer: item.buffer ?? Buffer.alloc(0) })
    }
    await dir.writeFooter()
    await dir.writeHeader()
    await dir.writeBlockAllocationTable()
    await created.dispose()
    await remote.writeFile('w/x.alias.vhd', 'data/x.vhd')
    const ours = await openVhd(remote, 'w/x.alias.vhd')
    expect(ours.compression).toBe('brotli')
    expect(ours.footer.uuid).toBe(fx.footer.uuid)
    expect((await streamToBuffer((await openChain(remote, 'w/x.alias.vhd')).rawStream())).equals(fx.raw)).toBe(true)
    // vhd-lib's VhdFile serialization of it, parsed by our stream parser and written by our sink
    const opened = await vhdLib.openVhd(handler, 'w/x.alias.vhd')
    try {
      await opened.value.readBlockAllocationTable()
      const parsed = await openVhdStream(opened.value.stream())
      expect([...parsed.blockOrder]).toEqual([0, 3])
      await pumpVhd(parsed, [createVhdFileSink(remote, 'w/copy.vhd')])
    } finally {
      await opened.dispose()
    }
    expect((await streamToBuffer((await openChain(remote, 'w/copy.vhd')).rawStream())).equals(fx.raw)).toBe(true)
  })
})

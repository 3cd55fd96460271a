/**
 * Encrypted remotes, with Xen Orchestra's own @xen-orchestra/fs (and vhd-lib through it) as the oracle:
 * - XO's encrypted handler reads the backups we write on an encrypted remote (a real run: full, deltas,
 *   retention merge): every file byte-equal, vhd-lib opens and reads each disk chain through XO's handler;
 * - we read an encrypted remote XO's handler created and wrote (files, a brotli VhdDirectory);
 * - a wrong key is E_ENCRYPTION and writes nothing (backup run included);
 * - a remote an earlier backup-proxy encrypted (chunked format, fixture) is still read, never written;
 * - the same interop on the S3 store the suite starts (Swift + s3api). The registry's xo-remote-parser
 *   (0.5.0) cannot parse S3 URLs, so XO's parse is replaced, for these tests only, by one returning the
 *   object XO's current parser returns for that URL.
 */
import { cp, mkdir, readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { buffer as streamToBuffer } from 'node:stream/consumers'
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { listBackups } from '../../src/backup/catalog.js'
import { restoreDiskToFile } from '../../src/backup/restore.js'
import { runBackup } from '../../src/backup/run.js'
import { createRemote, parseRemoteUrl } from '../../src/remotes/index.js'
import type { Remote } from '../../src/remotes/remote.js'
import type { S3RemoteUrl } from '../../src/remotes/url-types.js'
import { createVhdDirectorySink } from '../../src/vhd/directory-sink.js'
import { openVhd } from '../../src/vhd/open.js'
import { pumpVhd } from '../../src/vhd/sink.js'
import { openVhdStream } from '../../src/vhd/stream-parser.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { defaults, runTask, saveRaw, startSim } from '../backup/helpers/fixture.js'
import { makeTempDir } from '../helpers/tmp.js'
import { expectCode } from '../remotes/conformance.js'
import { chunked, makeFixture } from '../vhd/fixtures.js'

// minimal shapes of the untyped CommonJS APIs we call
interface XoHandler {
  sync(): Promise<void>
  forget(): Promise<void>
  readonly isEncrypted: boolean
  readonly encryptionAlgorithm: string
  readFile(path: string): Promise<Buffer>
  writeFile(path: string, data: string | Buffer): Promise<void>
  outputFile(path: string, data: string | Buffer): Promise<void>
  outputStream(path: string, input: Readable, options: { checksum: boolean }): Promise<void>
  createReadStream(path: string, options?: { start?: number }): Promise<Readable>
}
interface LibVhd {
  footer: { currentSize: number }
  readBlockAllocationTable(): Promise<void>
  rawContent(): Readable
}
interface LibDirectory {
  footer: unknown
  header: unknown
  writeEntireBlock(block: { id: number; buffer: Buffer }): Promise<void>
  writeFooter(): Promise<void>
  writeHeader(): Promise<void>
  writeBlockAllocationTable(): Promise<void>
}
interface Disposable<T> {
  value: T
  dispose: () => unknown
}
interface VhdLib {
  openVhd(handler: XoHandler, path: string): Promise<Disposable<LibVhd>>
  VhdDirectory: { create(handler: XoHandler, path: string, opts: { compression?: string }): Promise<Disposable<LibDirectory>> }
  VhdSynthetic: { fromVhdChain(handler: XoHandler, path: string): Promise<Disposable<LibVhd>> }
}
type ParseItem = { type: string; footer?: unknown; header?: unknown; id?: number; buffer?: Buffer }

const require = createRequire(import.meta.url)
const { getHandler } = require('@xen-orchestra/fs') as { getHandler: (remote: Record<string, unknown>) => XoHandler }
const xoParser = require('xo-remote-parser') as { parse: (url: string) => Record<string, unknown> }
const vhdLib = require('vhd-lib') as VhdLib
const { parseVhdStream } = require('vhd-lib/parseVhdStream.js') as { parseVhdStream: (s: Readable) => AsyncIterable<ParseItem> }

const MiB = 1024 * 1024
const KEY = 'xo-interop-key-0123456789abcdef!'
const s3Url = inject('s3Url')

let dir: { path: string; remove: () => Promise<void> }
beforeAll(async () => {
  dir = await makeTempDir('bp-xo-encryption-')
})
afterAll(async () => {
  await dir?.remove()
})

async function opened(url: string, key = KEY): Promise<Remote> {
  const remote = createRemote(url, { encryptionKey: key })
  await remote.open()
  return remote
}

async function xoHandler(remote: Record<string, unknown>): Promise<XoHandler> {
  const handler = getHandler(remote)
  await handler.sync()
  return handler
}

/** Every file of our remote, read through XO's handler, is byte-equal to what we read. */
async function expectXoReadsEveryFile(ours: Remote, xo: XoHandler): Promise<number> {
  const files = (await ours.list('', { recursive: true })).filter((e) => !e.isDirectory).map((e) => e.path)
  for (const path of files) expect((await xo.readFile(path)).equals(await ours.readFile(path)), path).toBe(true)
  return files.length
}

async function vhdLibRaw(xo: XoHandler, aliasPath: string, sizeBytes: number): Promise<Buffer> {
  const d = await vhdLib.VhdSynthetic.fromVhdChain(xo, aliasPath)
  try {
    await d.value.readBlockAllocationTable()
    expect(d.value.footer.currentSize).toBe(sizeBytes)
    return (await streamToBuffer(d.value.rawContent())).subarray(0, sizeBytes)
  } finally {
    await d.dispose()
  }
}

/** XO writes an encrypted remote: a JSON file, a stream, and a brotli VhdDirectory with its alias. */
async function xoWrites(xo: XoHandler): Promise<{ json: string; stream: Buffer; raw: Buffer }> {
  const json = JSON.stringify({ written: 'by xo' })
  const stream = randomBytes(3 * MiB + 17)
  await xo.outputFile('xo-vm-backups/vm/meta.json', json)
  await xo.outputStream('xo-vm-backups/vm/full.xva', Readable.from([stream]), { checksum: false })
  const fx = makeFixture({ sizeBytes: 7 * MiB, blocks: [0, 3], content: 'pattern', seed: 'xo-enc' })
  const created = await vhdLib.VhdDirectory.create(xo, 'xo-vm-backups/vm/vdis/data/x.vhd', { compression: 'brotli' })
  for await (const item of parseVhdStream(Readable.from(chunked(fx.vhd), { objectMode: false }))) {
    if (item.type === 'footer') created.value.footer = item.footer
    else if (item.type === 'header') created.value.header = item.header
    else if (item.type === 'block') await created.value.writeEntireBlock({ id: item.id ?? -1, buffer: item.buffer ?? Buffer.alloc(0) })
  }
  await created.value.writeFooter()
  await created.value.writeHeader()
  await created.value.writeBlockAllocationTable()
  await created.dispose()
  await xo.writeFile('xo-vm-backups/vm/vdis/x.alias.vhd', 'data/x.vhd')
  return { json, stream, raw: fx.raw }
}

async function expectWeRead(ours: Remote, written: { json: string; stream: Buffer; raw: Buffer }): Promise<void> {
  expect((await ours.readFile('xo-vm-backups/vm/meta.json')).toString()).toBe(written.json)
  expect((await ours.readFile('xo-vm-backups/vm/full.xva')).equals(written.stream)).toBe(true)
  expect((await ours.stat('xo-vm-backups/vm/full.xva')).size).toBe(written.stream.length)
  const vhd = await openVhd(ours, 'xo-vm-backups/vm/vdis/x.alias.vhd')
  expect(vhd.kind).toBe('directory')
  expect(vhd.compression).toBe('brotli')
  for (const i of vhd.blockIndexes()) {
    const block = await vhd.readBlock(i)
    const at = i * vhd.header.blockSizeBytes
    const expected = written.raw.subarray(at, at + block.data.length) // the last block may pass the disk's end
    expect(block.data.subarray(0, expected.length).equals(expected), `block ${i}`).toBe(true)
  }
  expect(vhd.blockIndexes()).toEqual([0, 3])
}

describe('encrypted local remote, Xen Orchestra as the oracle', () => {
  let sim: XapiSimulator
  beforeAll(async () => {
    sim = await startSim()
  })
  afterAll(async () => {
    await sim?.close()
  })

  it('XO reads our encrypted backups (VhdDirectory forced, merged chain): files byte-equal, vhd-lib reads every point', async () => {
    const vm = sim.listVms()[0]!
    const vdi = vm.vdis[0]!
    const root = join(dir.path, 'ours')
    await mkdir(root)
    // no useVhdDirectory: the encrypted remote forces VhdDirectory, as XO requires
    const task = runTask(sim, [vm.uuid], { enc: { url: `file://${root}`, options: { encryptionKey: KEY } } }, { exportRetention: 2 }, 'job-enc')
    const rawAt = new Map<string, string>()
    for (let i = 0; i < 3; i++) {
      if (i > 0) sim.writeBlocks(vm.uuid, { blocks: 2 + i })
      const s = await runBackup(task, { defaults, exporter: runDiskExport, signal: new AbortController().signal })
      expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
      const ts = (s.tasks?.[0]?.result as { timestamp: string }).timestamp
      rawAt.set(ts, join(dir.path, `raw-${ts}`))
      await saveRaw(sim, vdi.uuid, rawAt.get(ts)!)
    }
    expect(JSON.parse(await readFile(join(root, 'encryption.json'), 'utf8'))).toEqual({ algorithm: 'chacha20-poly1305' })

    const ours = await opened(`file://${root}`)
    const xo = await xoHandler({ url: `file://${root}`, encryptionKey: KEY })
    try {
      expect(xo.isEncrypted).toBe(true)
      expect(xo.encryptionAlgorithm).toBe('chacha20-poly1305')
      expect(await expectXoReadsEveryFile(ours, xo)).toBeGreaterThan(10)
      const backups = await listBackups(ours, vm.uuid)
      expect(backups.map((b) => b.timestamp)).toEqual([...rawAt.keys()].slice(1))
      for (const b of backups) {
        const vhdPath = Object.values(b.metadata.vhds)[0]!
        expect(vhdPath).toMatch(/\.alias\.vhd$/)
        const raw = await readFile(rawAt.get(b.timestamp)!)
        const alias = `xo-vm-backups/${vm.uuid}/${vhdPath}`
        expect((await vhdLibRaw(xo, alias, raw.length)).equals(raw), `vhd-lib at ${b.timestamp}`).toBe(true)
        const out = join(dir.path, `restore-${b.timestamp}.raw`)
        await restoreDiskToFile(ours, { vmUuid: vm.uuid, vdiUuid: vdi.uuid, at: b.timestamp }, out)
        expect((await readFile(out)).equals(raw), `our restore at ${b.timestamp}`).toBe(true)
      }
      // XO refuses ranged reads on an encrypted remote, and so do we
      await expect(xo.createReadStream('metadata.json', { start: 1 })).rejects.toThrow(/encryption/)
    } finally {
      await xo.forget()
      await ours.close()
    }
  })

  it('a wrong key is E_ENCRYPTION and writes nothing, in a backup run too', async () => {
    const root = join(dir.path, 'wrong')
    await mkdir(root)
    const ours = await opened(`file://${root}`)
    await ours.writeFile('xo-vm-backups/x.json', '{}')
    await ours.close()
    const snapshot = async () => {
      const plain = createRemote(`file://${root}`)
      const entries = await plain.list('', { recursive: true, includeHidden: true })
      return Promise.all(entries.map(async (e) => `${e.path}:${e.isDirectory ? 'dir' : (await plain.readFile(e.path)).toString('hex')}`))
    }
    const before = await snapshot()
    const wrongKey = 'another-key-0123456789abcdef0000'
    const error = await expectCode(opened(`file://${root}`, wrongKey), 'E_ENCRYPTION')
    expect(error.message).not.toContain(wrongKey)
    const vm = sim.listVms()[0]!
    const task = runTask(sim, [vm.uuid], { enc: { url: `file://${root}`, options: { encryptionKey: wrongKey } } }, {}, 'job-wrong')
    const s = await runBackup(task, { defaults, exporter: runDiskExport, signal: new AbortController().signal })
    expect(s.status).toBe('failure')
    expect(JSON.stringify(s)).not.toContain(wrongKey)
    expect(await snapshot()).toEqual(before)
    // XO's handler refuses the wrong key too
    await expect(xoHandler({ url: `file://${root}`, encryptionKey: wrongKey })).rejects.toThrow()
  })

  it('a wrong key on an empty encrypted remote is refused too, its metadata.json kept (XO would re-key it)', async () => {
    const root = join(dir.path, 'empty')
    await mkdir(root)
    await (await opened(`file://${root}`)).close()
    const before = await readFile(join(root, 'metadata.json'))
    await expectCode(opened(`file://${root}`, 'another-key-0123456789abcdef0000'), 'E_ENCRYPTION')
    expect((await readFile(join(root, 'metadata.json'))).equals(before)).toBe(true)
    await (await opened(`file://${root}`)).close()
  })

  it('we read an encrypted remote XO created and wrote', async () => {
    const root = join(dir.path, 'theirs')
    await mkdir(root)
    const xo = await xoHandler({ url: `file://${root}`, encryptionKey: KEY })
    const written = await xoWrites(xo)
    await xo.forget()
    const ours = await opened(`file://${root}`)
    try {
      await expectWeRead(ours, written)
      await expectCode(ours.createReadStream('xo-vm-backups/vm/full.xva', { start: 5 }), 'E_ENCRYPTED_RANGE')
    } finally {
      await ours.close()
    }
  })

  it('a remote an earlier backup-proxy encrypted (chunked format) is read, never written; XO refuses it', async () => {
    const root = join(dir.path, 'chunked')
    await cp(new URL('../remotes/fixtures/chunked-remote', import.meta.url), root, { recursive: true })
    const ours = await opened(`file://${root}`, 'legacy-fixture-key-0123456789abc')
    try {
      const data = await ours.readFile('xo-vm-backups/vm/data.bin')
      expect(data.length).toBe(10_000)
      expect(data.every((b, i) => b === ((i * 7 + (i >> 8)) & 0xff))).toBe(true)
      expect((await ours.stat('xo-vm-backups/vm/data.bin')).size).toBe(10_000)
      expect(JSON.parse((await ours.readFile('xo-vm-backups/vm/meta.json')).toString())).toEqual({ hello: 'world' })
      expect((await ours.readFile('xo-vm-backups/vm/empty')).length).toBe(0)
      // ranged reads still work on this format (old remotes may hold VhdFile backups)
      const part = await streamToBuffer(await ours.createReadStream('xo-vm-backups/vm/data.bin', { start: 4090, end: 8200 }))
      expect(part.equals(data.subarray(4090, 8201))).toBe(true)
      await expectCode(ours.writeFile('xo-vm-backups/vm/new.json', '{}'), 'E_ENCRYPTION')
      await expectCode(ours.createWriteStream('xo-vm-backups/vm/new.vhd'), 'E_ENCRYPTION')
      expect((await ours.list('xo-vm-backups/vm')).map((e) => e.path)).toEqual(['data.bin', 'empty', 'meta.json'])
    } finally {
      await ours.close()
    }
    await expect(xoHandler({ url: `file://${root}`, encryptionKey: 'legacy-fixture-key-0123456789abc' })).rejects.toThrow()
  })
})

/** What XO's current xo-remote-parser returns for an s3:// or s3+http:// URL. */
function xoParsedS3(url: S3RemoteUrl): Record<string, unknown> {
  return {
    type: 's3',
    protocol: url.protocol,
    region: url.region,
    host: url.port === undefined ? url.host : `${url.host}:${url.port}`,
    path: `/${[url.bucket, url.path].filter((p) => p !== '').join('/')}`,
    username: url.accessKeyId,
    password: url.secretAccessKey,
  }
}

describe.skipIf(s3Url === null)('encrypted S3 remote, Xen Orchestra as the oracle', () => {
  const base = parseRemoteUrl(s3Url ?? 's3://a:b@h/b') as S3RemoteUrl
  const originalParse = xoParser.parse
  const parsed = new Map<string, Record<string, unknown>>()
  beforeAll(() => {
    xoParser.parse = (url: string) => parsed.get(url) ?? originalParse(url)
  })
  afterAll(() => {
    xoParser.parse = originalParse
  })
  /** an S3 remote in its own prefix, and XO's handler on the same place */
  const place = (name: string) => {
    const url: S3RemoteUrl = { ...base, path: `${base.path}/xo-enc-${name}-${randomBytes(3).toString('hex')}` }
    const xoUrl = `s3+http://xo-parsed/${name}/${randomBytes(3).toString('hex')}`
    parsed.set(xoUrl, xoParsedS3(url))
    return { url, xo: { url: xoUrl, encryptionKey: KEY } }
  }

  it('XO reads our encrypted VhdDirectory on S3: files byte-equal, vhd-lib reads the disk', async () => {
    const { url, xo: xoRemote } = place('ours')
    const ours = createRemote(url, { encryptionKey: KEY })
    await ours.open()
    const fx = makeFixture({ sizeBytes: 9 * MiB + 512, blocks: [0, 2, 4], content: 'random', seed: 's3-enc' })
    await pumpVhd(await openVhdStream(chunked(fx.vhd)), [createVhdDirectorySink(ours, 'xo-vm-backups/vm/vdis/d.alias.vhd', { compression: 'brotli' })])
    await ours.writeFile('xo-vm-backups/vm/meta.json', JSON.stringify({ mode: 'delta' }))
    const xo = await xoHandler(xoRemote)
    try {
      expect(xo.isEncrypted).toBe(true)
      expect(await expectXoReadsEveryFile(ours, xo)).toBeGreaterThan(5)
      expect((await vhdLibRaw(xo, 'xo-vm-backups/vm/vdis/d.alias.vhd', fx.raw.length)).equals(fx.raw)).toBe(true)
    } finally {
      await xo.forget()
      await ours.close()
    }
  })

  it('we read an encrypted remote XO wrote on S3', async () => {
    const { url, xo: xoRemote } = place('theirs')
    const xo = await xoHandler(xoRemote)
    const written = await xoWrites(xo)
    await xo.forget()
    const ours = createRemote(url, { encryptionKey: KEY })
    await ours.open()
    try {
      await expectWeRead(ours, written)
      await expectCode(createRemote(url, { encryptionKey: 'another-key-0123456789abcdef0000' }).open(), 'E_ENCRYPTION')
    } finally {
      await ours.close()
    }
  })
})

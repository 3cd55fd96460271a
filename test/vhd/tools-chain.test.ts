/**
 * Independent readers on what we write: vhdimount (libvhdi, FUSE) follows a 3-level VhdFile chain through
 * our parent locators; a maximal BAT (2040 GiB disk) is accepted by qemu-img, vhdiinfo and our readers;
 * the whole parse + write path runs inside a worker thread.
 */
import { existsSync } from 'node:fs'
import { mkdir, readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { beforeAll, describe, expect, it } from 'vitest'
import type { LocalRemote } from '../../src/remotes/local.js'
import { openChain } from '../../src/vhd/chain.js'
import { createVhdDirectorySink } from '../../src/vhd/directory-sink.js'
import { createVhdFileSink } from '../../src/vhd/file-sink.js'
import { pumpVhd } from '../../src/vhd/sink.js'
import { openVhdStream } from '../../src/vhd/stream-parser.js'
import { startDaemon } from '../helpers/process.js'
import { waitFor } from '../helpers/ports.js'
import { useTempDir } from '../helpers/tmp.js'
import { blockData, chunked, makeFixture } from './fixtures.js'
import { localRemote } from './remote.js'
import { qemuInfo, vhdiinfo } from './tools.js'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const tmp = useTempDir('bp-vhd-tools-')

describe('independent readers and threads', () => {
  let remote: LocalRemote
  beforeAll(async () => {
    remote = await localRemote(join(tmp(), 'remote'))
  })

  it('vhdimount reads a 3-level VhdFile chain through our parent locators', async () => {
    const size = 10 * MiB
    const base = makeFixture({ sizeBytes: size, seed: 'vm-base' })
    const d1 = makeFixture({ sizeBytes: size, seed: 'vm-d1', blocks: [1, 4], parentUuid: base.footer.uuid })
    const d2 = makeFixture({ sizeBytes: size, seed: 'vm-d2', blocks: [4], parentUuid: d1.footer.uuid })
    await pumpVhd(await openVhdStream(chunked(base.vhd)), [createVhdFileSink(remote, 'm/1.vhd')])
    await pumpVhd(await openVhdStream(chunked(d1.vhd)), [createVhdFileSink(remote, 'm/2.vhd', { parent: { relativePath: '1.vhd', uuid: base.footer.uuid, timestamp: base.footer.timestamp } })])
    await pumpVhd(await openVhdStream(chunked(d2.vhd)), [createVhdFileSink(remote, 'm/3.vhd', { parent: { relativePath: '2.vhd', uuid: d1.footer.uuid, timestamp: d1.footer.timestamp } })])
    const expected = Buffer.from(base.raw)
    for (const fx of [d1, d2]) for (const i of fx.blocks) fx.raw.copy(expected, i * 2 * MiB, i * 2 * MiB, (i + 1) * 2 * MiB)
    const mnt = join(tmp(), 'mnt')
    await mkdir(mnt)
    const daemon = startDaemon('vhdimount', ['-v', join(remote.root, 'm/3.vhd'), mnt])
    try {
      await waitFor('vhdimount', () => existsSync(join(mnt, 'vhdi3')), 60_000)
      // one file per layer; the last is the child seen through its parents
      expect((await readdir(mnt)).sort()).toEqual(['vhdi1', 'vhdi2', 'vhdi3'])
      expect((await readFile(join(mnt, 'vhdi3'))).equals(expected)).toBe(true)
      expect((await readFile(join(mnt, 'vhdi1'))).equals(base.raw)).toBe(true)
    } finally {
      await promisify(execFile)('umount', [mnt]).catch(() => undefined) // the daemon exits on unmount; stop() below ends it anyway
      await daemon.stop()
    }
  })

  it('handles the largest BAT (2040 GiB disk, first and last block present)', async () => {
    const sizeBytes = 2040 * GiB
    const last = sizeBytes / (2 * MiB) - 1
    const fx = makeFixture({ sizeBytes, blocks: [0, last], noRaw: true, seed: 'max' })
    expect(fx.header.maxTableEntries).toBe(1_044_480)
    const vhd = await openVhdStream(chunked(fx.vhd, 1024 * 1024))
    await pumpVhd(vhd, [createVhdFileSink(remote, 'max/a.vhd'), createVhdDirectorySink(remote, 'max/b.alias.vhd', { compression: 'brotli' })])
    expect((await qemuInfo(join(remote.root, 'max/a.vhd')))['virtual-size']).toBe(sizeBytes)
    expect(await vhdiinfo(join(remote.root, 'max/a.vhd'))).toMatch(/Media size\s*:.*2190433320960 bytes/)
    for (const p of ['max/a.vhd', 'max/b.alias.vhd']) {
      const chain = await openChain(remote, p)
      expect(chain.blockIndexes()).toEqual([0, last])
      expect((await chain.readRange(last * 2 * MiB, 2 * MiB)).equals(blockData('max', last))).toBe(true)
      expect((await chain.readRange(GiB, 4096)).equals(Buffer.alloc(4096))).toBe(true)
    }
  })

  it('parses and writes (brotli included) inside a worker thread', async () => {
    const fx = makeFixture({ sizeBytes: 7 * MiB, content: 'pattern', seed: 'thread' })
    const root = join(tmp(), 'worker-remote')
    await mkdir(root)
    const boot = `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))}; register(); await import(${JSON.stringify(new URL('./fixtures/sink-worker.ts', import.meta.url).href)})`
    const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(boot)}`), { workerData: { root, vhd: fx.vhd } })
    const result = await new Promise<{ blocks: number[] }>((resolve, reject) => {
      worker.once('message', resolve)
      worker.once('error', reject)
    })
    await worker.terminate()
    expect(result.blocks).toEqual([4, 4])
    const r = await localRemote(root)
    for (const p of ['w/a.vhd', 'w/b.alias.vhd']) expect((await openChain(r, p)).blockIndexes()).toEqual([0, 1, 2, 3])
  })
})

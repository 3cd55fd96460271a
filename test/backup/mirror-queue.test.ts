/**
 * A mirror backup through the real queue (EnqueueClient → BullMQ → ProxyRuntime → the stream pool): the
 * bytes of every copied file go through the pool's `mirror.copy` thread task, one per VHD; the target
 * (VhdDirectory, encrypted) then holds the source's backups, `verify --full` finds nothing wrong, and each
 * point restores to the same bytes from both remotes.
 */
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest'
import { listBackups } from '../../src/backup/catalog.js'
import { restoreDiskToFile } from '../../src/backup/restore.js'
import { verifyRemote } from '../../src/backup/verify.js'
import type { TaskInputOf } from '../../src/queue/tasks.js'
import { createRemote } from '../../src/remotes/index.js'
import type { Remote } from '../../src/remotes/remote.js'
import { MiB } from './helpers/fixture.js'
import { startQueueHarness, type QueueHarness } from './helpers/queue-harness.js'

let h: QueueHarness
const dstOptions = { useVhdDirectory: true, encryptionKey: 'm'.repeat(32) }

beforeAll(async () => {
  h = await startQueueHarness({ redisUrl: inject('redisUrl'), proxyId: 'mirror-q', dirPrefix: 'bp-mirror-q-', sim: { vms: 1, disksPerVm: 2, seed: 2727, diskSizeBytes: 16 * MiB } })
}, 60_000)
afterAll(() => h?.close())

async function withRemote<T>(url: string, options: Record<string, unknown>, fn: (r: Remote) => Promise<T>): Promise<T> {
  const r = createRemote(url, options)
  await r.open()
  try {
    return await fn(r)
  } finally {
    await r.close()
  }
}

describe('mirror backup through the queue', () => {
  it('copies each VHD in a mirror.copy pool task; the target verifies and restores as the source', async () => {
    const vm = h.sim.listVms()[0]!
    const [src, dst] = ['src', 'dst'].map((d) => join(h.dir.path, d)) as [string, string]
    await mkdir(src)
    await mkdir(dst)
    for (let i = 0; i < 3; i++) {
      if (i > 0) h.sim.writeBlocks(vm.uuid, { blocks: 2 })
      const s = await h.run({ kind: 'backup.run', job: { id: 'mq', name: 'mq', mode: 'delta', vms: { uuid: [vm.uuid] }, settings: { '': { exportRetention: 10 } } }, schedule: { id: 'mqs' }, remotes: { r: { url: `file://${src}` } }, xapis: { sim: h.xapiRef() } })
      expect(s.status, JSON.stringify(s.tasks, null, 1)).toBe('success')
    }
    const poolRuns = vi.spyOn(h.proxy.pool, 'run')
    try {
      const mirror: TaskInputOf<'backup.mirror'> = { kind: 'backup.mirror', job: { id: 'mirror-q', mode: 'delta', sourceRemote: 'src', settings: { '': { exportRetention: 10 } } }, schedule: { id: 'ms' }, remotes: { src: { url: `file://${src}` }, dst: { url: `file://${dst}`, options: dstOptions } } }
      const s = await h.run(mirror)
      expect(s.status, JSON.stringify(s.tasks, null, 1)).toBe('success')
      // 3 backups × 2 disks, each VHD one thread task
      expect(poolRuns.mock.calls.map((c) => c[0])).toEqual(Array.from({ length: 6 }, () => 'mirror.copy'))
    } finally {
      poolRuns.mockRestore()
    }
    const want = await withRemote(`file://${src}`, {}, async (r) => (await listBackups(r, vm.uuid)).map((b) => b.timestamp))
    expect(want).toHaveLength(3)
    await withRemote(`file://${dst}`, dstOptions, async (r) => {
      expect((await verifyRemote(r, { full: true })).problems).toEqual([])
      expect((await listBackups(r, vm.uuid)).map((b) => b.timestamp)).toEqual(want)
    })
    for (const ts of want) {
      for (const [i, vdi] of vm.vdis.entries()) {
        const [a, b] = [join(h.dir.path, `s-${ts}-${i}.raw`), join(h.dir.path, `d-${ts}-${i}.raw`)]
        await withRemote(`file://${src}`, {}, (r) => restoreDiskToFile(r, { vmUuid: vm.uuid, vdiUuid: vdi.uuid, at: ts }, a))
        await withRemote(`file://${dst}`, dstOptions, (r) => restoreDiskToFile(r, { vmUuid: vm.uuid, vdiUuid: vdi.uuid, at: ts }, b))
        expect((await readFile(b)).equals(await readFile(a)), `${ts} disk ${i}`).toBe(true)
      }
    }
  }, 180_000)
})

/**
 * The backup engine in process (no queue): simulator → XapiClient → disk export (fan-out to real local
 * remotes) → XO layout. Independent checks: qemu-img compare of the full against the simulator's raw
 * export, vhdiinfo on the delta.
 */
import { mkdir, readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runDiskExport, threadRemotes } from '../../src/backup/disk-export.js'
import { runBackup } from '../../src/backup/run.js'
import { listBackups } from '../../src/backup/catalog.js'
import { restoreDiskToFile } from '../../src/backup/restore.js'
import { createRemote } from '../../src/remotes/index.js'
import type { TaskLogEvent } from '../../src/backup/task-log.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, qemuCompare, runTask, saveRaw, startSim, vhdiinfo } from './helpers/fixture.js'

let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }

beforeAll(async () => {
  sim = await startSim()
  dir = await makeTempDir('bp-engine-')
})
afterAll(async () => {
  await sim?.close()
  await dir?.remove()
})

describe('backup engine (in process)', () => {
  it('full then delta to two local remotes, XO layout, valid VHDs', async () => {
    const vm = sim.listVms()[0]!
    const vdi = vm.vdis[0]!
    const remotes = { a: `file://${dir.path}/a`, b: `file://${dir.path}/b` }
    await Promise.all(['a', 'b'].map((r) => mkdir(join(dir.path, r))))
    const events: TaskLogEvent[] = []
    const task = runTask(sim, [vm.uuid], remotes, { exportRetention: 10 })
    const s1 = await runBackup(task, { defaults, exporter: runDiskExport, signal: new AbortController().signal, emit: (e) => events.push(e) })
    expect(s1.status, JSON.stringify(s1, null, 1)).toBe('success')
    expect(events[0]).toMatchObject({ event: 'start', message: 'backup' })
    const raw1 = join(dir.path, 'raw1')
    await saveRaw(sim, vdi.uuid, raw1)

    sim.writeBlocks(vm.uuid, { blocks: 3 })
    const s2 = await runBackup(task, { defaults, exporter: runDiskExport, signal: new AbortController().signal })
    expect(s2.status, JSON.stringify(s2, null, 1)).toBe('success')

    for (const r of ['a', 'b']) {
      const vmDir = join(dir.path, r, 'xo-vm-backups', vm.uuid)
      const jsons = (await readdir(vmDir)).filter((n) => n.endsWith('.json')).sort()
      expect(jsons).toHaveLength(2)
      const [m1, m2] = await Promise.all(jsons.map(async (n) => JSON.parse(await readFile(join(vmDir, n), 'utf8')) as { vhds: Record<string, string>; isVhdDifferencing: Record<string, boolean>; version: string }))
      expect(m1!.version).toBe('2.0.0')
      expect(Object.values(m1!.isVhdDifferencing)).toEqual([false])
      expect(Object.values(m2!.isVhdDifferencing)).toEqual([true])
      const full = join(vmDir, Object.values(m1!.vhds)[0]!)
      const delta = join(vmDir, Object.values(m2!.vhds)[0]!)
      await qemuCompare(full, raw1)
      expect(await vhdiinfo(delta)).toMatch(/Differential/i)
      expect((await readdir(vmDir))).toContain('cache.json.gz')
    }
  })
})

describe('remotes reused by the disk exports of a thread', () => {
  it('3 targets x 4 disks: the exports open each target once, and the next run opens none', async () => {
    const sim4 = await startSim({ disksPerVm: 4, diskSizeBytes: 4 * 1024 * 1024 })
    try {
      const vm = sim4.listVms()[0]!
      expect(vm.vdis).toHaveLength(4)
      const remotes = Object.fromEntries(['r1', 'r2', 'r3'].map((r) => [r, `file://${dir.path}/reuse-${r}`]))
      await Promise.all(['r1', 'r2', 'r3'].map((r) => mkdir(join(dir.path, `reuse-${r}`))))
      const before = threadRemotes.opens
      const task = runTask(sim4, [vm.uuid], remotes)
      const s1 = await runBackup(task, { defaults, exporter: runDiskExport, signal: new AbortController().signal })
      expect(s1.status, JSON.stringify(s1, null, 1)).toBe('success')
      expect(threadRemotes.opens - before).toBe(3)
      const s2 = await runBackup(task, { defaults, exporter: runDiskExport, signal: new AbortController().signal })
      expect(s2.status, JSON.stringify(s2, null, 1)).toBe('success')
      expect(threadRemotes.opens - before).toBe(3)
    } finally {
      await threadRemotes.close()
      await sim4.close()
    }
  })
})

describe('chains, retention and restore (in process)', () => {
  it('full + 3 deltas with retention 2: chains valid, every kept point restores to the source', async () => {
    const vm = sim.listVms()[0]!
    const vdi = vm.vdis[0]!
    await Promise.all(['f', 'd'].map((r) => mkdir(join(dir.path, r))))
    const remotes = { file: `file://${dir.path}/f`, dir: { url: `file://${dir.path}/d`, options: { useVhdDirectory: true } } }
    const task = runTask(sim, [vm.uuid], remotes, { exportRetention: 2 }, 'job-chain')
    const rawAt = new Map<string, string>()
    for (let i = 0; i < 4; i++) {
      if (i > 0) sim.writeBlocks(vm.uuid, { blocks: 2 + i })
      const s = await runBackup(task, { defaults, exporter: runDiskExport, signal: new AbortController().signal })
      expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
      const ts = (s.tasks?.[0]?.result as { timestamp: string }).timestamp
      const raw = join(dir.path, `raw-${ts}`)
      await saveRaw(sim, vdi.uuid, raw)
      rawAt.set(ts, raw)
      expect((s.tasks?.[0]?.result as { full: boolean }).full).toBe(i === 0)
    }
    for (const [id, root] of [['file', 'f'], ['dir', 'd']] as const) {
      const remote = createRemote(`file://${dir.path}/${root}`)
      await remote.open()
      try {
        const backups = await listBackups(remote, vm.uuid)
        expect(backups.map((b) => b.timestamp)).toEqual([...rawAt.keys()].slice(2))
        for (const b of backups) {
          const out = join(dir.path, `restore-${id}-${b.timestamp}`)
          const r = await restoreDiskToFile(remote, { vmUuid: vm.uuid, vdiUuid: vdi.uuid, at: b.timestamp }, `${out}.raw`)
          expect(r.chain.length).toBeLessThanOrEqual(2)
          expect(await sameFile(`${out}.raw`, rawAt.get(b.timestamp)!)).toBe(true)
          await restoreDiskToFile(remote, { vmUuid: vm.uuid, vdiUuid: vdi.uuid, at: b.timestamp }, `${out}.vhd`)
          await qemuCompare(`${out}.vhd`, rawAt.get(b.timestamp)!)
        }
        // nothing left behind by merges: only the kept VHDs in the disk's directory
        const vdiDirEntries = (await remote.list(`xo-vm-backups/${vm.uuid}/vdis/job-chain/${vdi.uuid}`)).filter((e) => !e.isDirectory).map((e) => e.path)
        expect(vdiDirEntries.sort()).toEqual(backups.map((b) => `${b.timestamp}${id === 'dir' ? '.alias.vhd' : '.vhd'}`))
      } finally {
        await remote.close()
      }
    }
  })
})

async function sameFile(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([readFile(a), readFile(b)])
  return x.equals(y)
}

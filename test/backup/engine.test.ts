/**
 * The backup engine in process (no queue): simulator → XapiClient → disk export (fan-out to real local
 * remotes) → XO layout. Independent checks: qemu-img compare of the full against the simulator's raw
 * export, vhdiinfo on the delta.
 */
import { mkdir, readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { runBackup } from '../../src/backup/run.js'
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

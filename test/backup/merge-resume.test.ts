/**
 * A retention merge interrupted mid-way (what SIGKILL during a run's retention leaves: the old backup's
 * metadata already gone, a `.<parent>.merge.json` state, blocks half moved) is resumed by the next run of
 * the job: the state and the merged-away VHD disappear and `verify --full` is clean. A state whose child
 * no longer exists (left by an older version) is removed and reported, not kept forever. In process:
 * simulator → engine → local remote (VhdDirectory, XO's in-place merge; and VhdFile, rewrite merge).
 */
import { mkdir, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listBackups } from '../../src/backup/catalog.js'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { resolveVhdPath } from '../../src/backup/layout.js'
import { runBackup } from '../../src/backup/run.js'
import { verifyRemote } from '../../src/backup/verify.js'
import { createRemote } from '../../src/remotes/index.js'
import { mergeStatePath, mergeVhd } from '../../src/vhd/merge.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, runTask, startSim } from './helpers/fixture.js'

let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }

beforeAll(async () => {
  sim = await startSim({ vms: 3, seed: 4242, diskSizeBytes: 16 * 1024 * 1024 })
  dir = await makeTempDir('bp-merge-resume-')
})
afterAll(async () => {
  await sim?.close()
  await dir?.remove()
})

async function backupOnce(task: ReturnType<typeof runTask>, vmUuid: string): Promise<void> {
  sim.writeBlocks(vmUuid, { blocks: 3 })
  const s = await runBackup(task, { defaults, exporter: runDiskExport, signal: new AbortController().signal })
  expect(s.status, JSON.stringify(s)).toBe('success')
}

describe('interrupted retention merge', () => {
  it.each([
    ['VhdDirectory (in place)', true, 0],
    ['VhdFile (rewrite)', false, 1],
  ])('%s: the next run resumes it; verify --full is clean', async (_name, useVhdDirectory, vmIndex) => {
    const vm = sim.listVms()[vmIndex]!
    const root = join(dir.path, useVhdDirectory ? 'dir' : 'file')
    await mkdir(root)
    const remote = createRemote(`file://${root}`)
    await remote.open()
    const task = (retention: number) => runTask(sim, [vm.uuid], { r: { url: `file://${root}`, options: { useVhdDirectory } } }, { exportRetention: retention })
    for (let i = 0; i < 3; i++) await backupOnce(task(10), vm.uuid)
    // a run killed in its retention (keep 2): the oldest metadata removed, the merge of its VHD into the next one cut short
    const [b1, b2] = await listBackups(remote, vm.uuid)
    const parent = resolveVhdPath(vm.uuid, Object.values(b1!.metadata.vhds)[0]!)
    const child = resolveVhdPath(vm.uuid, Object.values(b2!.metadata.vhds)[0]!)
    await remote.unlink(b1!.metadataPath)
    await expect(mergeVhd(remote, parent, child, { crashAfterBlocks: 1, stateEveryBlocks: 1 })).rejects.toThrow(/simulated crash/)
    expect(await remote.exists(mergeStatePath(parent))).toBe(true)
    expect((await verifyRemote(remote, { vmUuid: vm.uuid })).problems.map((p) => p.kind)).toContain('leftover')
    // the next run (retention 3: nothing new to delete) resumes it
    await backupOnce(task(3), vm.uuid)
    expect(await remote.exists(mergeStatePath(parent))).toBe(false)
    expect(await remote.exists(parent)).toBe(false)
    const report = await verifyRemote(remote, { vmUuid: vm.uuid, full: true })
    expect(report.problems).toEqual([])
    expect(report.backups).toBe(3)
    await remote.close()
  })

  it('a merge state whose child no longer exists is removed by the next run and reported in its task log', async () => {
    const vm = sim.listVms()[2]!
    const root = join(dir.path, 'stale')
    await mkdir(root)
    const remote = createRemote(`file://${root}`)
    await remote.open()
    const task = runTask(sim, [vm.uuid], { r: `file://${root}` }, { exportRetention: 10 })
    await backupOnce(task, vm.uuid)
    const [b1] = await listBackups(remote, vm.uuid)
    const vhd = resolveVhdPath(vm.uuid, Object.values(b1!.metadata.vhds)[0]!)
    const gone = vhd.replace(/\/[^/]+$/, '/20200101T000000Z.vhd')
    const state = { version: 1, mode: 'rewrite', parentPath: vhd, childPath: gone, parentDataPath: vhd, childDataPath: gone, childUuid: 'x', parentUuid: 'y', childBlocks: [], nextBlock: 0, step: 'blocks' }
    await remote.writeFile(mergeStatePath(vhd), JSON.stringify(state))
    sim.writeBlocks(vm.uuid, { blocks: 1 })
    const s = await runBackup(task, { defaults, exporter: runDiskExport, signal: new AbortController().signal })
    expect(s.status).toBe('success')
    expect(JSON.stringify(s)).toContain(mergeStatePath(vhd))
    expect(await remote.exists(mergeStatePath(vhd))).toBe(false)
    expect(await remote.exists(vhd)).toBe(true)
    expect((await verifyRemote(remote, { vmUuid: vm.uuid, full: true })).problems).toEqual([])
    expect((await readdir(join(root, 'xo-vm-backups', vm.uuid))).filter((n) => n.endsWith('.json'))).toHaveLength(2)
    await remote.close()
  })
})

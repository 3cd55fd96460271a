/**
 * Chains that cross: Xen Orchestra's own backup runner (@xen-orchestra/backups' VmsXapi runner with its
 * IncrementalRemoteWriter, over XO's XAPI client on the simulator and XO's RemoteAdapter on a local
 * remote) writes a full and a delta; our next run of the same job continues the chain as a delta; XO's
 * reader (readIncrementalVmBackup) restores our delta; XO's next run continues our chain as a delta;
 * we verify and restore every point, each equal to the simulator's disk at that time.
 *
 * One stand-in: the registry has vhd-lib 4.15.0 only, whose VHD writer ignores the uuid / parentUuid /
 * parentPath options XO's writer (0.74) passes (vhd-lib 4.16 honours them): without them XO's own
 * deltas would have no parent. The adapter below writes those three fields into the VHD (with
 * vhd-lib's own API) before XO's validator runs, as vhd-lib 4.16 does while writing.
 */
import { mkdir, readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listBackups } from '../../src/backup/catalog.js'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { restoreDiskToFile } from '../../src/backup/restore.js'
import { runBackup } from '../../src/backup/run.js'
import { verifyRemote } from '../../src/backup/verify.js'
import { createRemote } from '../../src/remotes/index.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, runTask, saveRaw, startSim } from '../backup/helpers/fixture.js'
import { loadXo, xoHandler, xoXapi, type XoBackup, type XoHandler, type XoRemoteAdapter, type XoXapi } from './oracle.js'

const require = createRequire(import.meta.url)
interface LibVhd {
  footer: { uuid: Buffer }
  header: { parentUuid: Buffer; parentUnicodeName: string }
  readHeaderAndFooter(): Promise<void>
  writeHeader(): Promise<void>
  writeFooter(): Promise<void>
}
const vhdLib = require('vhd-lib') as { openVhd(h: unknown, path: string, o?: { flags: string }): Promise<{ value: LibVhd; dispose(): Promise<void> }> }

/** vhd-lib 4.16's uuid / parentUuid / parentPath, written after vhd-lib 4.15 wrote the VHD (see header). */
async function stamp(handler: XoHandler, path: string, o: { uuid?: Buffer; parentUuid?: Buffer; parentPath?: string }): Promise<void> {
  const d = await vhdLib.openVhd(handler, path, { flags: 'r+' })
  try {
    const vhd = d.value
    if (o.uuid !== undefined) vhd.footer.uuid = o.uuid
    if (o.parentUuid !== undefined && o.parentPath !== undefined) {
      vhd.header.parentUuid = o.parentUuid
      // as vhd-lib's own chain(): the header names the parent (no parent locator: a VhdFile written
      // by 4.15 has no room for one before its first block)
      vhd.header.parentUnicodeName = o.parentPath
    }
    await vhd.writeHeader()
    await vhd.writeFooter()
  } finally {
    await d.dispose()
  }
}

type Progress = { type: string; status?: string; result?: unknown; data?: { type?: string; message?: string } }

let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }
let xapi: XoXapi

beforeAll(async () => {
  sim = await startSim({ vms: 2 })
  dir = await makeTempDir('bp-xo-interop-')
  xapi = await xoXapi(sim)
})
afterAll(async () => {
  await xapi?.disconnect()
  await sim?.close()
  await dir?.remove()
})

async function xoSide(remote: Record<string, unknown>) {
  const xo = await loadXo()
  const handler = await xoHandler(remote)
  const base = new xo.RemoteAdapter(handler, { vhdDirectoryCompression: 'brotli' })
  const writeVhd = base.writeVhd.bind(base)
  const adapter: XoRemoteAdapter = Object.assign(base, {
    writeVhd: (path: string, disk: unknown, opts: Record<string, unknown>) =>
      writeVhd(path, disk, {
        ...opts,
        validator: async (tmpPath: string) => {
          await stamp(handler, tmpPath, opts)
          await (opts.validator as (p: string) => Promise<void>)(tmpPath)
        },
      }),
  })
  const { createRunner } = (await import('@xen-orchestra/backups/Backup.mjs')) as { createRunner: (o: unknown) => { run(): Promise<unknown> } }
  const { Task } = require('@vates/task') as { Task: { run(o: unknown, fn: () => Promise<unknown>): Promise<unknown> } }
  const Disposable = require('promise-toolbox/Disposable') as new (dispose: () => void, value: unknown) => unknown
  /** one run of XO's backup job (same job and schedule ids as ours) */
  const run = async (vmUuid: string, jobId: string): Promise<Progress[]> => {
    const runner = createRunner({
      config: { snapshotNameLabelTpl: '[XO Backup {job.name}] {vm.name_label}', vhdDirectoryCompression: 'brotli', disableMergeWorker: true, writeBlockConcurrency: 16, defaultSettings: {}, vm: { defaultSettings: {} } },
      getAdapter: () => Promise.resolve(new Disposable(() => undefined, adapter)),
      getConnectedRecord: async (type: string, uuid: string) => new Disposable(() => undefined, await xapi.getRecordByUuid(type, uuid)),
      job: { id: jobId, type: 'backup', mode: 'delta', name: 'test job', vms: { id: vmUuid }, remotes: { id: 'r' }, settings: { '': { exportRetention: 10, snapshotRetention: 1 } } },
      schedule: { id: 'sched1' },
      remotes: { r: remote },
    })
    const events: Progress[] = []
    await Task.run({ properties: { name: 'backup run' }, onProgress: (e: Progress) => events.push(e) }, () => runner.run())
    return events
  }
  return { adapter, run, close: () => handler.forget() }
}

/** XO's reader (readIncrementalVmBackup: the chain as XO's restore opens it) → the disk's bytes. */
async function xoRead(adapter: XoRemoteAdapter, backup: XoBackup): Promise<Buffer> {
  const inc = await adapter.readIncrementalVmBackup(backup, undefined)
  const [disk] = Object.values(inc.disks) as unknown as { getVirtualSize(): number; getBlockSize(): number; diskBlocks(): AsyncIterable<{ index: number; data: Buffer }>; close(): Promise<void> }[]
  try {
    const out = Buffer.alloc(disk!.getVirtualSize())
    for await (const b of disk!.diskBlocks()) b.data.copy(out, b.index * disk!.getBlockSize())
    return out
  } finally {
    await disk!.close()
  }
}

/**
 * Backups are named by their start time to the second (XO's formatFilenameDate): two runs of one job in
 * the same second would share a name. Runs here follow each other faster than that on a quiet machine, so
 * each waits for the clock's next second (a condition, not a delay the test depends on).
 */
async function nextSecond(): Promise<void> {
  const start = Math.floor(Date.now() / 1000)
  while (Math.floor(Date.now() / 1000) === start) await new Promise((resolve) => setTimeout(resolve, 20))
}

const failures = (events: Progress[]): Progress[] => events.filter((e) => e.type === 'end' && e.status !== 'success')

// real work bound by CPU, not waits: four backup runs (three by XO's own code) and every point read by
// both sides; beside two CPU burners (load 25 on 2 cores) the brotli case took 49.6 s of the suite's
// 60 s, so the bound is 5 minutes
describe('XO and we continue each other\'s chains', { timeout: 300_000 }, () => {
  it.each([
    ['VhdFile', 0, false],
    ['VhdDirectory (brotli)', 1, true],
  ] as const)('%s: XO full + delta, our delta, XO\'s delta; every point read by both sides equals the source', async (_kind, vmIndex, directory) => {
    const vm = sim.listVms()[vmIndex]!
    const vdi = vm.vdis[0]!
    const root = join(dir.path, `r${vmIndex}`)
    await mkdir(root)
    const options = directory ? { useVhdDirectory: true } : {}
    const xo = await xoSide({ url: `file://${root}`, ...options })
    const rawAt: Buffer[] = []
    const snap = async () => {
      const p = join(dir.path, `raw-${vmIndex}-${rawAt.length}`)
      await saveRaw(sim, vdi.uuid, p)
      rawAt.push(await readFile(p))
    }
    try {
      // XO: full, then delta
      expect(failures(await xo.run(vm.uuid, 'job1'))).toEqual([])
      await snap()
      sim.writeBlocks(vm.uuid, { blocks: 3 })
      await nextSecond()
      expect(failures(await xo.run(vm.uuid, 'job1'))).toEqual([])
      await snap()
      // us: the same job continues the chain as a delta
      sim.writeBlocks(vm.uuid, { blocks: 2 })
      await nextSecond()
      const ours = await runBackup(runTask(sim, [vm.uuid], { r: { url: `file://${root}`, options } }, { exportRetention: 10 }, 'job1'), { defaults, exporter: runDiskExport, signal: new AbortController().signal })
      expect(ours.status, JSON.stringify(ours, null, 1)).toBe('success')
      expect((ours.tasks?.[0]?.result as { full: boolean }).full).toBe(false)
      await snap()
      // XO: continues our chain as a delta
      sim.writeBlocks(vm.uuid, { blocks: 2 })
      await nextSecond()
      expect(failures(await xo.run(vm.uuid, 'job1'))).toEqual([])
      await snap()

      const backups = await xo.adapter.listVmBackups(vm.uuid)
      expect(backups.map((b) => Object.values(b.isVhdDifferencing as Record<string, boolean>)[0])).toEqual([false, true, true, true])
      expect(backups.map((b) => (b.vmSnapshot.other_config as Record<string, string>)['xo:backup:job'])).toEqual(['job1', 'job1', 'job1', 'job1'])
      // XO's reader restores every point, ours (the third) included
      for (const [i, b] of backups.entries()) {
        expect(Object.values(b.vhds!)[0]).toMatch(directory ? /\.alias\.vhd$/ : /Z\.vhd$/)
        expect((await xoRead(xo.adapter, b)).equals(rawAt[i]!), `XO reading point ${i}`).toBe(true)
      }
    } finally {
      await xo.close()
    }
    // we verify the mixed chain and restore every point
    const remote = createRemote(`file://${root}`, options)
    await remote.open()
    try {
      expect((await verifyRemote(remote, { full: true })).problems).toEqual([])
      const kept = await listBackups(remote, vm.uuid)
      expect(kept).toHaveLength(4)
      for (const [i, b] of kept.entries()) {
        const out = join(dir.path, `ours-${vmIndex}-${i}.raw`)
        await restoreDiskToFile(remote, { vmUuid: vm.uuid, vdiUuid: vdi.uuid, at: b.timestamp }, out)
        expect((await readFile(out)).equals(rawAt[i]!), `our restore of point ${i}`).toBe(true)
      }
    } finally {
      await remote.close()
    }
  })
})

/**
 * Mirror backups (XO's `mirrorBackup`, delta mode) between local remotes: the source's chains copied to a
 * VhdFile target and a VhdDirectory target with their own retentions (merged there), the job's VM filter
 * honoured, a second run copying only what is new; then Xen Orchestra's own RemoteAdapter lists what the
 * targets hold (the mirror's job id), `verify --full` finds nothing wrong and every kept point restores
 * to exactly the simulator's disk at that time.
 */
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listBackups } from '../../src/backup/catalog.js'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { inlineCopier, runMirror } from '../../src/backup/mirror.js'
import { restoreDiskToFile } from '../../src/backup/restore.js'
import { runBackup } from '../../src/backup/run.js'
import { verifyRemote } from '../../src/backup/verify.js'
import { parseTask, type BackupMirrorTask } from '../../src/queue/tasks.js'
import { createRemote } from '../../src/remotes/index.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { xoAdapter } from '../xo/oracle.js'
import { defaults, runTask, saveRaw, startSim } from './helpers/fixture.js'

let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }
const rawAt = new Map<string, string>()

function mirrorTask(remotes: Record<string, { url: string; options?: Record<string, unknown> }>, settings: Record<string, Record<string, unknown>>, extra: Record<string, unknown> = {}): BackupMirrorTask {
  return parseTask({ kind: 'backup.mirror', job: { id: 'mirror1', name: 'mirror', type: 'mirrorBackup', mode: 'delta', sourceRemote: 'src', settings, ...extra }, schedule: { id: 'msched' }, remotes }) as BackupMirrorTask
}

async function backup(vmUuids: string[], url: string): Promise<void> {
  for (const vm of vmUuids) sim.writeBlocks(vm, { blocks: 3 })
  const s = await runBackup(runTask(sim, vmUuids, { r: url }, { exportRetention: 50 }), { defaults, exporter: runDiskExport, signal: new AbortController().signal })
  expect(s.status, JSON.stringify(s)).toBe('success')
  for (const [i, vm] of vmUuids.entries()) {
    const ts = (s.tasks?.[i]?.result as { timestamp: string }).timestamp
    const vdi = sim.listVms().find((v) => v.uuid === vm)!.vdis[0]!
    const raw = join(dir.path, `raw-${vm}-${ts}`)
    await saveRaw(sim, vdi.uuid, raw)
    rawAt.set(`${vm}/${ts}`, raw)
  }
}

async function checkTarget(url: string, vmUuid: string, expected: string[]): Promise<void> {
  const remote = createRemote(url)
  await remote.open()
  try {
    const report = await verifyRemote(remote, { full: true })
    expect(report.problems).toEqual([])
    const kept = await listBackups(remote, vmUuid)
    expect(kept.map((b) => b.timestamp)).toEqual(expected)
    const vdi = sim.listVms().find((v) => v.uuid === vmUuid)!.vdis[0]!
    for (const b of kept) {
      expect(b.metadata).toMatchObject({ jobId: 'mirror1', scheduleId: 'msched', mode: 'delta' })
      const out = join(dir.path, `restore-${Math.random().toString(36).slice(2)}.raw`)
      await restoreDiskToFile(remote, { vmUuid, vdiUuid: vdi.uuid, at: b.timestamp }, out)
      expect((await readFile(out)).equals(await readFile(rawAt.get(`${vmUuid}/${b.timestamp}`)!))).toBe(true)
    }
  } finally {
    await remote.close()
  }
}

beforeAll(async () => {
  sim = await startSim({ vms: 2, seed: 1717, diskSizeBytes: 16 * 1024 * 1024 })
  dir = await makeTempDir('bp-mirror-')
})
afterAll(async () => {
  await sim?.close()
  await dir?.remove()
})

describe('mirror backup (delta)', () => {
  it('copies the chains, applies each target\'s retention and filter; XO lists the result; restores equal the source', async () => {
    const [vm0, vm1] = sim.listVms().map((v) => v.uuid) as [string, string]
    const roots = Object.fromEntries(['src', 'a', 'b', 'c'].map((k) => [k, join(dir.path, k)]))
    for (const r of Object.values(roots)) await mkdir(r)
    const url = (k: string) => `file://${roots[k]!}`
    for (let i = 0; i < 4; i++) await backup(i < 2 ? [vm0, vm1] : [vm0], url('src'))
    const srcTs = (vm: string) => [...rawAt.keys()].filter((k) => k.startsWith(vm)).map((k) => k.split('/')[1]!).sort()

    const remotes = { src: { url: url('src') }, a: { url: url('a') }, b: { url: url('b'), options: { useVhdDirectory: true } } }
    const task = mirrorTask(remotes, { '': { exportRetention: 2 }, b: { exportRetention: 3 } })
    const read: number[] = []
    const s1 = await runMirror(task, { defaults, copier: inlineCopier, signal: new AbortController().signal, progress: (p) => read.push(p.readBytes) })
    expect(s1.status, JSON.stringify(s1, null, 1)).toBe('success')
    // the bytes read, summed over VMs mirrored two at a time and over each VM's backups, never go back
    expect(read.length).toBeGreaterThan(2)
    expect(read.filter((n, i) => i > 0 && n < read[i - 1]!)).toEqual([])
    expect(read.at(-1)).toBeGreaterThan(0)
    await checkTarget(url('a'), vm0, srcTs(vm0).slice(-2))
    await checkTarget(url('b'), vm0, srcTs(vm0).slice(-3))
    await checkTarget(url('a'), vm1, srcTs(vm1))

    // XO's library lists what the mirror wrote
    for (const [k, opts] of [['a', {}], ['b', { useVhdDirectory: true }]] as const) {
      const { adapter, xo, close } = await xoAdapter({ url: url(k), ...opts })
      try {
        const all = await adapter.listAllVmBackups()
        expect(Object.keys(all).sort()).toEqual([vm0, vm1].sort())
        const formatted = xo.formatVmBackups(all, k)
        expect(formatted[vm0]!.map((f) => f.timestamp)).toEqual(all[vm0]!.map((b) => b.timestamp))
        for (const f of formatted[vm0]!) expect(f).toMatchObject({ type: 'xo-vm-backup', mode: 'delta', jobId: 'mirror1', scheduleId: 'msched' })
      } finally {
        await close()
      }
    }

    // a second run has nothing to copy; a new source backup is copied and the target chain merged
    const s2 = await runMirror(task, { defaults, copier: inlineCopier, signal: new AbortController().signal })
    expect(s2.status).toBe('success')
    expect(JSON.stringify(s2)).toContain('No new data to upload for this VM')
    await backup([vm0], url('src'))
    const s3 = await runMirror(task, { defaults, copier: inlineCopier, signal: new AbortController().signal })
    expect(s3.status, JSON.stringify(s3, null, 1)).toBe('success')
    await checkTarget(url('a'), vm0, srcTs(vm0).slice(-2))
    await checkTarget(url('b'), vm0, srcTs(vm0).slice(-3))

    // the job's filter: only vm1 is mirrored to c
    const filtered = mirrorTask({ src: remotes.src, c: { url: url('c') } }, { '': { exportRetention: 5 } }, { filter: { vm: { uuid: { __or: [vm1] } } } })
    const s4 = await runMirror(filtered, { defaults, copier: inlineCopier, signal: new AbortController().signal })
    expect(s4.status).toBe('success')
    expect(JSON.stringify(s4)).toContain('This VM is excluded by the job filter')
    const c = createRemote(url('c'))
    await c.open()
    expect((await listBackups(c, vm0)).length).toBe(0)
    await c.close()
    await checkTarget(url('c'), vm1, srcTs(vm1))
  }, 600_000)
})

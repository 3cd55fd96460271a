/**
 * `backup.restore` (whole-VM restore) through the real queue: EnqueueClient → BullMQ → ProxyRuntime
 * (builtin processors, disks through the stream pool's `backup.restoreDisk` thread task) → local remotes
 * and the XAPI simulator (3 SRs, 2 networks). A VM with 2 disks and 2 VIFs (one per network) is backed
 * up three times (full + 2 deltas, writes in between) to a VhdFile remote and to a VhdDirectory remote,
 * brotli-compressed and encrypted; every point of each remote is restored as a new VM on another SR and
 * checked: the VM record (XO's name, description, tag, fields of the source), the disks in VBD order on
 * that SR, each imported by the proxy's stream pool (`backup.restoreDisk`, one thread task per disk), each disk's raw export (`export_raw_vdi?format=raw` through the real client) byte for byte
 * against the source disk as it was at that point, the VIFs on the networks of the source with its MACs.
 * Also: an SR that fills up (coded error, nothing left), an import failing, a cancel mid-import,
 * `start: true` (the restored VM runs), the progress a restore reports (up to 100 % of its bytes), and
 * the CLI's whole-VM form (`restore --vm --at --sr --xapi`).
 */
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest'
import { inlineImporter } from '../../src/backup/disk-import.js'
import { importVmBackup } from '../../src/backup/import-vm-backup.js'
import { metadataPath } from '../../src/backup/layout.js'
import type { JobProgress } from '../../src/queue/client.js'
import { createRemote } from '../../src/remotes/index.js'
import type { RestoreToSrResult } from '../../src/backup/restore-task.js'
import type { EnqueueClient } from '../../src/queue/client.js'
import type { JobSummary } from '../../src/queue/task-log.js'
import type { TaskInputOf } from '../../src/queue/tasks.js'
import { runCli } from '../../src/cli/program.js'
import type { XapiClient } from '../../src/xapi/client.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { waitFor } from '../helpers/ports.js'
import { saveRaw, MiB } from './helpers/fixture.js'
import { startQueueHarness, type QueueHarness } from './helpers/queue-harness.js'

const DISK_BYTES = 16 * MiB
let harness: QueueHarness
let sim: XapiSimulator
let xapi: XapiClient
let dir: QueueHarness['dir']
let client: EnqueueClient
let remotes: Record<string, { url: string; options?: Record<string, unknown> }>
/** metadata path of each point, and the source disks' raw content at that point */
const points: { path: string; raws: string[] }[] = []

const xapiOf = () => harness.xapiRef()
const srs = () => xapi.listSrs().sort((a, b) => a.name_label.localeCompare(b.name_label))

function restoreTask(remoteId: string, path: string, srUuid: string, extra: { name?: string; start?: boolean } = {}): TaskInputOf<'backup.restore'> {
  return { kind: 'backup.restore', remoteId, remote: remotes[remoteId]!, metadataPath: path, xapi: xapiOf(), srUuid, ...extra }
}

const run = (task: TaskInputOf<'backup.run'> | TaskInputOf<'backup.restore'>): Promise<JobSummary> => harness.run(task)
const exportRaw = (vdiUuid: string, path: string): Promise<Buffer> => harness.exportRaw(vdiUuid, path)

/** VDIs on an SR, and VMs that are neither the source nor snapshots. */
const vdisOn = (srUuid: string) => xapi.listVdis().filter((v) => v.SR === xapi.get('SR', srUuid).$ref).length
const restoredVms = () => xapi.listVms().filter((v) => v.uuid !== sim.listVms()[0]!.uuid)
/** The restored VM once this client's cache has the restore's last change (start unblocked: XO's final step). */
const restoredVm = (uuid: string) => xapi.waitObject('VM', uuid, { timeoutMs: 10_000, predicate: (vm) => vm.blocked_operations.start === undefined })

beforeAll(async () => {
  harness = await startQueueHarness({ redisUrl: inject('redisUrl'), proxyId: 'rv-main', dirPrefix: 'bp-restore-vm-', sim: { vms: 1, disksPerVm: 2, seed: 4343, diskSizeBytes: DISK_BYTES, srs: 3, networks: 2 } })
  ;({ sim, xapi, dir, client } = harness)
  for (const r of ['file', 'dir']) await mkdir(join(dir.path, r))
  remotes = {
    file: { url: `file://${dir.path}/file` },
    dir: { url: `file://${dir.path}/dir`, options: { useVhdDirectory: true, encryptionKey: 'k'.repeat(32) } },
  }
  // the source VM: a second VIF on the second network, then full + 2 deltas
  const vm = sim.listVms()[0]!
  const second = (await xapi.call('network.get_all')) as string[]
  const net2 = second.find((ref) => xapi.get('network', ref).name_label === 'Sim network 1')!
  await xapi.call('VIF.create', { VM: vm.ref, network: net2, device: '1', MAC: '02:00:00:00:01:01', MTU: 1500, other_config: {} })
  await xapi.call('VM.set_tags', vm.ref, ['prod', 'web'])
  for (let i = 0; i < 3; i++) {
    if (i > 0) sim.writeBlocks(vm.uuid, { blocks: 2 + i })
    const s = await run({
      kind: 'backup.run',
      job: { id: 'rvjob', name: 'rvjob', mode: 'delta', vms: { uuid: [vm.uuid] }, settings: { '': {} } }, // VhdDirectory targets use backup.vhdDirectoryCompression: brotli by default, as XO's proxies
      schedule: { id: 's1' },
      remotes,
      xapis: { sim: xapiOf() },
    })
    expect(s.status, JSON.stringify(s.tasks)).toBe('success')
    const r = s.tasks?.[0]?.result as { timestamp: string; full: boolean }
    expect(r.full).toBe(i === 0)
    const raws: string[] = []
    for (const vdi of vm.vdis) {
      const raw = join(dir.path, `src-${i}-${vdi.uuid}.raw`)
      await saveRaw(sim, vdi.uuid, raw)
      raws.push(raw)
    }
    points.push({ path: metadataPath(vm.uuid, r.timestamp), raws })
  }
}, 120_000)
afterAll(() => harness?.close())

describe('backup.restore: whole VM through the queue (simulator, VhdFile and encrypted VhdDirectory remotes)', () => {
  it('restores every point of both remotes as a VM on another SR: record, disks in order with the content of that point, VIFs', async () => {
    const source = xapi.get('VM', sim.listVms()[0]!.uuid)
    const sourceVifs = source.VIFs.map((ref) => xapi.get('VIF', ref)).sort((a, b) => a.device.localeCompare(b.device))
    expect(sourceVifs.map((v) => xapi.get('network', v.network).uuid)).toHaveLength(2)
    // the disks go through the proxy's stream pool: one `backup.restoreDisk` thread task each
    const poolRuns = vi.spyOn(harness.proxy.pool, 'run')
    for (const remoteId of ['file', 'dir']) {
      for (const [i, point] of points.entries()) {
        const sr = srs()[1 + (i % 2)]!
        poolRuns.mockClear()
        const s = await run(restoreTask(remoteId, point.path, sr.uuid))
        expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
        expect(poolRuns.mock.calls.map((c) => c[0])).toEqual(['backup.restoreDisk', 'backup.restoreDisk'])
        const result = s.result as unknown as RestoreToSrResult
        const vm = await restoredVm(result.restoredVmUuid)
        expect(vm.uuid).not.toBe(source.uuid)
        expect(vm.name_label).toBe(`${source.name_label} (${result.timestamp})`)
        expect(vm.name_description).toMatch(new RegExp(`^Restored on \\d{8}T\\d{6}Z from ${remoteId} - ${source.name_description}$`))
        expect(vm.tags).toEqual(['prod', 'web', 'restored from backup'])
        expect(vm.power_state).toBe('Halted')
        expect(vm.blocked_operations).toEqual({})
        for (const f of ['VCPUs_max', 'VCPUs_at_startup', 'memory_static_max', 'memory_dynamic_max', 'platform', 'HVM_boot_policy', 'PV_bootloader']) expect(vm[f], f).toEqual(source[f])
        expect(Object.keys(vm.other_config).filter((k) => k.startsWith('xo:backup:'))).toEqual([])
        // disks: in VBD order, on the chosen SR, each equal to the source disk at that point
        const disks = xapi.vmDisks(vm.$ref)
        expect(disks.map((d) => d.vbd.userdevice)).toEqual(['0', '1'])
        expect(disks.map((d) => d.vbd.bootable)).toEqual([true, false])
        expect(result.vdis.map((v) => v.uuid)).toEqual(disks.map((d) => d.vdi.uuid))
        for (const [d, { vdi }] of disks.entries()) {
          expect(vdi.SR).toBe(sr.$ref)
          expect(vdi.name_label).toBe(`${source.name_label} disk ${d}`)
          const exported = await exportRaw(vdi.uuid, join(dir.path, `restored-${remoteId}-${i}-${d}.raw`))
          expect(exported.length).toBe(DISK_BYTES)
          expect(exported.equals(await readFile(point.raws[d]!)), `${remoteId} point ${i} disk ${d}`).toBe(true)
        }
        // VIFs: same devices, same networks (by $network$uuid), same MACs
        const vifs = vm.VIFs.map((ref) => xapi.get('VIF', ref)).sort((a, b) => a.device.localeCompare(b.device))
        expect(vifs.map((v) => [v.device, v.network, v.MAC])).toEqual(sourceVifs.map((v) => [v.device, v.network, v.MAC]))
        // XO's shape: a `transfer` task (result { size, id }) over one task per disk
        expect(s.tasks?.map((t) => [t.message, t.status, t.result, t.tasks?.map((d) => d.status)])).toEqual([['transfer', 'success', { size: result.sizeBytes, id: result.restoredVmUuid }, ['success', 'success']]])
      }
    }
    poolRuns.mockRestore()
  }, 180_000)

  it('reports its progress in bytes, rising to 100 % of what it uploads', async () => {
    const remote = createRemote(remotes.dir!.url, remotes.dir!.options)
    await remote.open()
    const reports: JobProgress[] = []
    try {
      const r = await importVmBackup({
        remote, remoteSpec: { url: remotes.dir!.url, options: remotes.dir!.options ?? {} }, metadataPath: points[0]!.path, xapi, srUuid: srs()[1]!.uuid, // the full: disks under the 16 MiB between two upload reports
        importer: inlineImporter, signal: new AbortController().signal, onProgress: (p) => reports.push(p),
      })
      const total = r.vdis.reduce((sum, v) => sum + v.sizeBytes, 0)
      expect(total).toBeGreaterThan(0)
      expect(reports.length).toBeGreaterThanOrEqual(r.vdis.length) // at least each disk's end (the upload reports it)
      for (const [i, p] of reports.entries()) {
        expect(p.totalBytes).toBe(total)
        if (i > 0) expect(p.doneBytes!).toBeGreaterThanOrEqual(reports[i - 1]!.doneBytes!)
      }
      expect(reports.at(-1)).toEqual({ percent: 100, doneBytes: total, totalBytes: total })
    } finally {
      await remote.close()
    }
  }, 60_000)

  it('an SR that fills up: coded error naming the SR, and neither VM nor VDI left behind', async () => {
    const sr = srs()[2]!
    sim.setSrCapacity(sr.uuid, 12 * MiB)
    try {
      const vdisBefore = vdisOn(sr.uuid)
      const vmsBefore = restoredVms().length
      const s = await run(restoreTask('dir', points[2]!.path, sr.uuid))
      expect(s.status).toBe('failure')
      expect(s.error?.code).toBe('E_XAPI')
      expect(s.error?.message).toMatch(new RegExp(`SR ${sr.uuid} \\(Sim SR 2\\) is full`))
      expect(JSON.stringify(s.error)).toContain('SR_BACKEND_FAILURE_44')
      await waitFor('the restore removed what it created', () => vdisOn(sr.uuid) === vdisBefore && restoredVms().length === vmsBefore, 10_000)
    } finally {
      sim.setSrCapacity(sr.uuid, 0)
    }
  }, 60_000)

  it('an import failing, and a restore cancelled mid-import: the VM and VDIs it created are removed', async () => {
    const sr = srs()[1]!
    const vdisBefore = vdisOn(sr.uuid)
    const vmsBefore = restoredVms().length
    try {
      sim.setFault({ kind: 'http-error', status: 500, xapiCode: 'VDI_IO_ERROR', on: 'import', times: 1 })
      const failed = await run(restoreTask('file', points[1]!.path, sr.uuid))
      expect(failed.status).toBe('failure')
      expect(failed.error?.code).toBe('E_XAPI')
      expect(JSON.stringify(failed.error)).toContain('VDI_IO_ERROR')
      await waitFor('failed restore removed', () => vdisOn(sr.uuid) === vdisBefore && restoredVms().length === vmsBefore, 60_000)

      sim.setFault({ kind: 'stall', afterBytes: 4 * MiB, on: 'import' })
      const h = await client.enqueue({ proxy: 'rv-main' }, restoreTask('file', points[1]!.path, sr.uuid))
      await waitFor('the VM and a VDI created', () => vdisOn(sr.uuid) > vdisBefore && restoredVms().length > vmsBefore, 30_000)
      await h.cancel()
      const s = await h.result().catch((e: unknown) => e as JobSummary)
      expect(s.status).toBe('interrupted')
      await waitFor('cancelled restore removed', () => vdisOn(sr.uuid) === vdisBefore && restoredVms().length === vmsBefore, 60_000)
    } finally {
      sim.clearFaults()
    }
  }, 60_000)

  it('mapVdisSrs (XO): a disk goes to the SR its entry names (by source or backup VDI uuid), a null entry leaves the disk out', async () => {
    const source = sim.listVms()[0]!
    const [main, other] = [srs()[1]!, srs()[2]!]
    const metadata = JSON.parse(await readFile(join(dir.path, 'file', points[2]!.path), 'utf8')) as { vdis: Record<string, { uuid: string }>; vbds: Record<string, { VDI: string; userdevice: string }> }
    const vbd1 = Object.values(metadata.vbds).find((v) => v.userdevice === '1')!
    const backupVdi1 = metadata.vdis[vbd1.VDI]!.uuid
    expect(backupVdi1).not.toBe(source.vdis[1]!.uuid) // the backup's VDI is the snapshot's, not the source disk
    // disk 0 by its source disk's uuid to the other SR; disk 1 (by the backup's VDI uuid) to the main one
    let s = await run({ ...restoreTask('file', points[2]!.path, main.uuid), mapVdisSrs: { [source.vdis[0]!.uuid]: other.uuid, [backupVdi1]: main.uuid } })
    expect(s.status, JSON.stringify(s.error)).toBe('success')
    let disks = xapi.vmDisks((await restoredVm((s.result as unknown as RestoreToSrResult).restoredVmUuid)).$ref)
    expect(disks.map((d) => [d.vbd.userdevice, d.vdi.SR])).toEqual([['0', other.$ref], ['1', main.$ref]])
    const exported = await exportRaw(disks[0]!.vdi.uuid, join(dir.path, 'mapped-0.raw'))
    expect(exported.equals(await readFile(points[2]!.raws[0]!))).toBe(true)
    // null: disk 1 is not restored
    s = await run({ ...restoreTask('file', points[2]!.path, main.uuid), mapVdisSrs: { [source.vdis[1]!.uuid]: null } })
    expect(s.status, JSON.stringify(s.error)).toBe('success')
    disks = xapi.vmDisks((await restoredVm((s.result as unknown as RestoreToSrResult).restoredVmUuid)).$ref)
    expect(disks.map((d) => [d.vbd.userdevice, d.vdi.SR])).toEqual([['0', main.$ref]])
  }, 60_000)

  it('start: true starts the restored VM under the given name', async () => {
    const s = await run(restoreTask('file', points[0]!.path, srs()[1]!.uuid, { start: true, name: 'started copy' }))
    expect(s.status, JSON.stringify(s.error)).toBe('success')
    const result = s.result as unknown as RestoreToSrResult
    expect(result.started).toBe(true)
    const vm = await xapi.waitObject('VM', result.restoredVmUuid, { timeoutMs: 10_000, predicate: (v) => v.power_state === 'Running' })
    expect(vm.name_label).toBe('started copy')
  }, 60_000)

  it('the CLI restores a VM at a point onto an SR (in process), and refuses mixing the disk and VM forms', async () => {
    const vm = sim.listVms()[0]!
    const ts = points[1]!.path.split('/').pop()!.replace('.json', '')
    const sr = srs()[2]!
    let out = ''
    const io = { stdout: (t: string) => void (out += t), stderr: (t: string) => void (out += t), isTTY: false }
    const xapiUrl = sim.url.replace('://', `://${sim.user}:${sim.password}@`)
    const code = await runCli(['restore', remotes.file!.url, '--vm', vm.uuid, '--at', ts, '--sr', sr.uuid, '--xapi', xapiUrl], io)
    expect(code, out).toBe(0)
    const m = new RegExp(`restored VM ${vm.uuid} at ${ts} as VM (\\S+) on SR ${sr.uuid}`).exec(out)
    expect(m, out).not.toBeNull()
    const disks = xapi.vmDisks((await restoredVm(m![1]!)).$ref)
    const exported = await exportRaw(disks[1]!.vdi.uuid, join(dir.path, 'cli-restored.raw'))
    expect(exported.equals(await readFile(points[1]!.raws[1]!))).toBe(true)
    expect(out).not.toContain(sim.password)

    let usage = ''
    const uio = { stdout: (t: string) => void (usage += t), stderr: (t: string) => void (usage += t), isTTY: false }
    expect(await runCli(['restore', remotes.file!.url, '--vm', vm.uuid, '--sr', sr.uuid, '--to', '/tmp/x.raw'], uio)).toBe(2)
    expect(usage).toMatch(/either --disk <vdiUuid> --to <file>.*or --sr <uuid> --xapi <url>/)
  }, 60_000)
})

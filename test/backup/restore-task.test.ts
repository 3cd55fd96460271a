/**
 * `backup.restore` through the real queue: EnqueueClient → BullMQ → ProxyRuntime (builtin processors)
 * → a local remote and the XAPI simulator. A VM of the simulator is backed up (full, then a delta after
 * writes), each point is restored into the simulator's SR, and the raw export (`export_raw_vdi?format=raw`
 * through the real client) of every new VDI is compared byte for byte with the simulator's disk as it
 * was at that backup. Also: labels, `start: true` refused, an unknown SR, a failing import and a cancel
 * mid-import (simulator faults on imports), each leaving no VDI behind.
 */
import { createWriteStream } from 'node:fs'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { metadataPath } from '../../src/backup/layout.js'
import type { RestoreToSrResult } from '../../src/backup/restore-task.js'
import { silentLogger } from '../../src/common/log.js'
import { compileConfig } from '../../src/config/index.js'
import { EnqueueClient } from '../../src/queue/client.js'
import { SealKey } from '../../src/queue/seal.js'
import type { JobSummary } from '../../src/queue/task-log.js'
import type { TaskInputOf } from '../../src/queue/tasks.js'
import { builtinProcessors } from '../../src/workers/builtin-processors.js'
import { ProxyRuntime } from '../../src/workers/proxy.js'
import { XapiClient } from '../../src/xapi/client.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { waitFor } from '../helpers/ports.js'
import { makeTempDir } from '../helpers/tmp.js'
import { saveRaw, startSim, MiB } from './helpers/fixture.js'
import { proxyConfig } from './helpers/proxy-config.js'

const sealText = SealKey.generate().export()
const sealKey = SealKey.fromString(sealText)
const redisUrl = inject('redisUrl')
let sim: XapiSimulator
let xapi: XapiClient
let dir: { path: string; remove: () => Promise<void> }
let client: EnqueueClient
let proxy: ProxyRuntime
let srUuid: string

const xapiOf = () => ({ url: sim.url, credentials: { username: sim.user, password: sim.password } })

function backupTask(vm: string, remoteUrl: string): TaskInputOf<'backup.run'> {
  return { kind: 'backup.run', job: { id: 'rjob', name: 'rjob', mode: 'delta', vms: { uuid: [vm] } }, schedule: { id: 's1' }, remotes: { r1: { url: remoteUrl } }, xapis: { sim: xapiOf() } }
}

function restoreTask(remoteUrl: string, path: string, extra: { name?: string; start?: boolean; srUuid?: string } = {}): TaskInputOf<'backup.restore'> {
  const { srUuid: sr, ...rest } = extra
  return { kind: 'backup.restore', remote: { url: remoteUrl }, metadataPath: path, xapi: xapiOf(), srUuid: sr ?? srUuid, ...rest }
}

async function run(task: TaskInputOf<'backup.run'> | TaskInputOf<'backup.restore'>): Promise<JobSummary> {
  return (await client.enqueue({ proxy: 'rs-main' }, task)).result()
}

/** The raw export of a VDI through the real client (GET /export_raw_vdi?format=raw), saved to a file. */
async function exportRaw(vdiUuid: string, path: string): Promise<Buffer> {
  const vdi = await xapi.waitObject('VDI', vdiUuid, { timeoutMs: 10_000 })
  const exp = await xapi.openExport(vdi.$ref, { format: 'raw' })
  await pipeline(exp.stream, createWriteStream(path))
  await xapi.waitTask(exp.taskRef).catch(() => undefined)
  return readFile(path)
}

beforeAll(async () => {
  sim = await startSim({ vms: 2, disksPerVm: 2, seed: 4242, diskSizeBytes: 16 * MiB })
  dir = await makeTempDir('bp-restore-task-')
  xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  srUuid = xapi.listSrs()[0]!.uuid
  client = new EnqueueClient({ redis: compileConfig(proxyConfig(redisUrl, sealText, 'x')).redis, sealKey, attempts: 1 })
  proxy = new ProxyRuntime({ config: compileConfig(proxyConfig(redisUrl, sealText, 'rs-main')), processors: builtinProcessors({ standIns: false }), sealKey, logger: silentLogger })
  await proxy.start()
})
afterAll(async () => {
  await client?.close()
  await proxy?.shutdown({ force: true })
  await xapi?.close()
  await sim?.close()
  await dir?.remove()
})

describe('backup.restore through the queue (simulator SR, local remote)', () => {
  it('restores a full and a delta point in time: each new VDI exports the disk as it was at that backup', async () => {
    const vm = sim.listVms()[0]!
    const remoteDir = join(dir.path, 'r1')
    await mkdir(remoteDir)
    const remoteUrl = `file://${remoteDir}`
    const points: { path: string; raws: string[] }[] = []
    for (let i = 0; i < 2; i++) {
      if (i > 0) sim.writeBlocks(vm.uuid, { blocks: 3 })
      const s = await run(backupTask(vm.uuid, remoteUrl))
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
    // the disks changed after the first backup: the two points differ
    expect((await readFile(points[0]!.raws[0]!)).equals(await readFile(points[1]!.raws[0]!))).toBe(false)

    for (const [i, point] of points.entries()) {
      const s = await run(restoreTask(remoteUrl, point.path, i === 1 ? { name: 'restored delta' } : {}))
      expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
      const result = s.result as unknown as RestoreToSrResult
      expect(result.vmUuid).toBe(vm.uuid)
      expect(result.vdis.map((v) => v.sourceVdiUuid)).toEqual(vm.vdis.map((v) => v.uuid))
      expect(result.vdis.map((v) => v.userdevice)).toEqual(['0', '1'])
      for (const [d, restored] of result.vdis.entries()) {
        expect(vm.vdis.map((v) => v.uuid)).not.toContain(restored.uuid)
        const exported = await exportRaw(restored.uuid, join(dir.path, `restored-${i}-${d}.raw`))
        expect(exported.length).toBe(16 * MiB)
        expect(exported.equals(await readFile(point.raws[d]!)), `point ${i} disk ${d}`).toBe(true)
        const record = await xapi.waitObject('VDI', restored.uuid, { timeoutMs: 10_000 })
        expect(record.name_label).toBe(i === 1 ? 'restored delta' : `${vm.nameLabel} disk ${d} (${result.timestamp})`)
        expect(record.SR).toBe(xapi.listSrs()[0]!.$ref)
      }
      // the log has one subtask per disk, each with the uploaded size
      expect(s.tasks?.map((t) => t.status)).toEqual(['success', 'success'])
    }
  })

  it('start: true is refused (disk restore only); an unknown SR fails and leaves no VDI behind', async () => {
    const vm = sim.listVms()[1]!
    const remoteDir = join(dir.path, 'r2')
    await mkdir(remoteDir)
    const remoteUrl = `file://${remoteDir}`
    const b = await run(backupTask(vm.uuid, remoteUrl))
    expect(b.status).toBe('success')
    const path = metadataPath(vm.uuid, (b.tasks?.[0]?.result as { timestamp: string }).timestamp)

    const started = await run(restoreTask(remoteUrl, path, { start: true }))
    expect(started.status).toBe('failure')
    expect(started.error?.code).toBe('E_TASK_INVALID')
    expect(started.error?.message).toMatch(/start: true is not supported.*disks only/)

    const before = xapi.listVdis().length
    const noSr = await run(restoreTask(remoteUrl, path, { srUuid: '00000000-0000-4000-8000-000000000000' }))
    expect(noSr.status).toBe('failure')
    expect(noSr.error?.message).toMatch(/SR 00000000-0000-4000-8000-000000000000 is not in the pool/)
    expect(xapi.listVdis().length).toBe(before)
  })

  it('an import failing, and a restore cancelled mid-import: the job reports it and the VDIs it created are removed', async () => {
    const vm = sim.listVms()[1]!
    const remoteDir = join(dir.path, 'r3')
    await mkdir(remoteDir)
    const remoteUrl = `file://${remoteDir}`
    const b = await run(backupTask(vm.uuid, remoteUrl))
    expect(b.status).toBe('success')
    const path = metadataPath(vm.uuid, (b.tasks?.[0]?.result as { timestamp: string }).timestamp)
    const restoredVdis = () => xapi.listVdis().filter((v) => v.other_config['xo:backup-proxy:restore:backup'] === path)
    try {
      sim.setFault({ kind: 'http-error', status: 500, xapiCode: 'VDI_IO_ERROR', on: 'import', times: 1 })
      const failed = await run(restoreTask(remoteUrl, path))
      expect(failed.status).toBe('failure')
      expect(failed.error?.code).toBe('E_XAPI')
      expect(JSON.stringify(failed.error)).toContain('VDI_IO_ERROR')
      await waitFor('failed restore VDIs removed', () => restoredVdis().length === 0, 60_000)

      sim.setFault({ kind: 'stall', afterBytes: 4 * MiB, on: 'import' })
      const h = await client.enqueue({ proxy: 'rs-main' }, restoreTask(remoteUrl, path))
      await waitFor('the first VDI created', () => restoredVdis().length > 0, 30_000)
      await h.cancel()
      const s = await h.result().catch((e: unknown) => e as JobSummary)
      expect(s.status).toBe('interrupted')
      await waitFor('cancelled restore VDIs removed', () => restoredVdis().length === 0, 60_000)
    } finally {
      sim.clearFaults()
    }
  })
})

/**
 * Replication (XO's job `srs`) end to end through the queue: EnqueueClient → BullMQ → ProxyRuntime →
 * simulator. A VM with 2 disks and 2 VIFs, continuous replication (delta mode) to an SR plus a local
 * remote, 3 runs: the first a full copy, then deltas imported onto clones of the last replica's disks
 * (the SR's export task says which, per disk);
 * after each run the newest replica's disks (raw export) equal the source disks; copyRetention 2 keeps
 * two replicas; replicas tagged, named and start-blocked as XO does. Then disaster recovery (full mode)
 * with a second SR that is full: the full SR fails alone (nothing left on it), the remote and the other
 * SR get the run.
 */
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { listBackups } from '../../src/backup/catalog.js'
import { CR_TAG, DR_TAG, START_BLOCKED, listReplicas } from '../../src/backup/replication.js'
import type { JobSummary } from '../../src/queue/task-log.js'
import type { TaskInputOf } from '../../src/queue/tasks.js'
import { createRemote } from '../../src/remotes/index.js'
import type { XapiClient } from '../../src/xapi/client.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { waitFor } from '../helpers/ports.js'
import { saveRaw, MiB } from './helpers/fixture.js'
import { startQueueHarness, type QueueHarness } from './helpers/queue-harness.js'

const DISK_BYTES = 16 * MiB
let h: QueueHarness
let sim: XapiSimulator
let xapi: XapiClient
let dir: QueueHarness['dir']

const xapiOf = () => h.xapiRef()
const srs = () => xapi.listSrs().sort((a, b) => a.name_label.localeCompare(b.name_label))
const srOf = (name: string) => srs().find((s) => s.name_label === name)!

function job(id: string, mode: 'delta' | 'full', srUuids: string[], remoteDir: string): TaskInputOf<'backup.run'> {
  return {
    kind: 'backup.run',
    job: { id, name: `${id} name`, mode, vms: { uuid: [sim.listVms()[0]!.uuid] }, srs: { id: { __or: srUuids } }, settings: { '': { copyRetention: 2, exportRetention: 2 } } },
    schedule: { id: `${id}-sched` },
    remotes: { local: { url: `file://${remoteDir}` } },
    xapis: { sim: xapiOf() },
  }
}

const run = (task: TaskInputOf<'backup.run'>): Promise<JobSummary> => h.run(task)
const exportRaw = (vdiUuid: string, path: string): Promise<Buffer> => h.exportRaw(vdiUuid, path)

const vmResult = (s: JobSummary) => s.tasks?.[0]?.result as { timestamp: string; full: boolean; succeeded: string[]; failed: string[] }
const ids = (jobId: string) => ({ scheduleId: `${jobId}-sched`, vmUuid: sim.listVms()[0]!.uuid })
/** the replicas once this client's cache holds `count` of them, complete */
const replicasOn = async (jobId: string, srUuid: string, count: number) => {
  await waitFor(`${count} replica(s) on ${srUuid}`, () => {
    const r = listReplicas(xapi, ids(jobId), srUuid)
    return r.length === count && r.every((vm) => vm.blocked_operations.start === START_BLOCKED && vm.other_config['xo:backup:datetime'] !== '19700101T000000Z')
  }, 10_000)
  return listReplicas(xapi, ids(jobId), srUuid)
}

beforeAll(async () => {
  h = await startQueueHarness({ redisUrl: inject('redisUrl'), proxyId: 'repl-main', dirPrefix: 'bp-repl-', sim: { vms: 1, disksPerVm: 2, seed: 5151, diskSizeBytes: DISK_BYTES, srs: 3, networks: 2 } })
  ;({ sim, xapi, dir } = h)
  const vm = sim.listVms()[0]!
  const nets = (await xapi.call('network.get_all')) as string[]
  const net1 = nets.find((ref) => xapi.get('network', ref).name_label === 'Sim network 1')!
  await xapi.call('VIF.create', { VM: vm.ref, network: net1, device: '1', MAC: '02:00:00:00:01:01', MTU: 1500, other_config: {} })
  await xapi.call('VM.set_tags', vm.ref, ['prod'])
}, 60_000)
afterAll(() => h?.close())

describe('replication to SRs through the queue (simulator)', () => {
  it('continuous replication: 3 runs (full, then deltas onto the last replica), each replica equal to the source, copyRetention 2, XO tags', async () => {
    const source = xapi.get('VM', sim.listVms()[0]!.uuid)
    const sr = srOf('Sim SR 1')
    await mkdir(join(dir.path, 'cr'))
    const seen: string[] = []
    for (let i = 0; i < 3; i++) {
      if (i > 0) sim.writeBlocks(source.uuid, { blocks: 2 + i })
      const s = await run(job('crjob', 'delta', [sr.uuid], join(dir.path, 'cr')))
      expect(s.status, JSON.stringify(s.tasks, null, 1)).toBe('success')
      const r = vmResult(s)
      expect(r.full).toBe(i === 0)
      expect(r.succeeded).toEqual(['local', sr.uuid].sort())
      // the SR's export: a full copy first, then each disk a delta imported onto the last replica's disk
      const srExport = s.tasks?.[0]?.tasks?.find((t) => t.message === 'export' && (t.data as { id?: string }).id === sr.uuid)
      expect(srExport?.data).toMatchObject({ type: 'SR', isFull: i === 0 })
      const perDisk = (srExport?.infos ?? []).filter((e) => e.message.endsWith(' replicated')).map((e) => e.data as { delta: boolean; sizeBytes: number })
      expect(perDisk.map((d) => d.delta)).toEqual([i > 0, i > 0])
      const replicas = await replicasOn('crjob', sr.uuid, Math.min(i + 1, 2))
      const newest = replicas.at(-1)!
      seen.push(newest.uuid)
      expect(newest.name_label).toBe(`${source.name_label} - crjob name - (${r.timestamp})`)
      expect(newest.tags).toEqual(['prod', CR_TAG])
      expect(newest.blocked_operations).toEqual({ start: START_BLOCKED, start_on: START_BLOCKED })
      expect(newest.power_state).toBe('Halted')
      expect(newest.other_config).toMatchObject({ 'xo:backup:job': 'crjob', 'xo:backup:schedule': 'crjob-sched', 'xo:backup:vm': source.uuid, 'xo:backup:sr': sr.uuid })
      expect(newest.other_config['xo:backup:datetime']).toBe(`${r.timestamp.slice(0, 11)}:${r.timestamp.slice(11, 13)}:${r.timestamp.slice(13)}`)
      // disks in VBD order, on the SR, each equal to the source disk now
      const disks = xapi.vmDisks(newest.$ref)
      expect(disks.map((d) => d.vbd.userdevice)).toEqual(['0', '1'])
      for (const [d, { vdi }] of disks.entries()) {
        expect(vdi.SR).toBe(sr.$ref)
        expect(vdi.name_label).toBe(`${source.name_label} disk ${d}`)
        const src = join(dir.path, `src-${i}-${d}.raw`)
        await saveRaw(sim, sim.listVms()[0]!.vdis[d]!.uuid, src)
        const replica = await exportRaw(vdi.uuid, join(dir.path, `replica-${i}-${d}.raw`))
        expect(replica.length).toBe(DISK_BYTES)
        expect(replica.equals(await readFile(src)), `run ${i} disk ${d}`).toBe(true)
      }
      // VIFs on the same networks (the source's record read now: the one taken at the start may predate the cache's last update)
      const vifs = newest.VIFs.map((ref) => xapi.get('VIF', ref)).sort((a, b) => a.device.localeCompare(b.device))
      expect(vifs.map((v) => [v.device, v.network])).toEqual(xapi.get('VM', source.uuid).VIFs.map((ref) => xapi.get('VIF', ref)).sort((a, b) => a.device.localeCompare(b.device)).map((v) => [v.device, v.network]))
    }
    // retention: the first replica (and its disks) went with the third run
    const kept = (await replicasOn('crjob', sr.uuid, 2)).map((vm) => vm.uuid)
    expect(kept).toEqual(seen.slice(1))
    await waitFor('the removed replica\'s disks are gone', () => xapi.listVdis().filter((v) => v.SR === sr.$ref).length === 4, 10_000)
  }, 180_000)

  it('disaster recovery with a full SR: that SR fails alone and keeps nothing, the remote and the other SR get the run', async () => {
    const good = srOf('Sim SR 1')
    const full = srOf('Sim SR 2')
    sim.setSrCapacity(full.uuid, 1 * MiB)
    await mkdir(join(dir.path, 'dr'))
    try {
      const vdisBefore = xapi.listVdis().filter((v) => v.SR === full.$ref).length
      const s = await run(job('drjob', 'full', [good.uuid, full.uuid], join(dir.path, 'dr')))
      expect(s.status).toBe('failure')
      const r = vmResult(s)
      expect(r.succeeded).toEqual(['local', good.uuid].sort())
      expect(r.failed).toEqual([full.uuid])
      const exports = s.tasks?.[0]?.tasks?.filter((t) => t.message === 'export') ?? []
      const failedExport = exports.find((t) => (t.data as { id?: string }).id === full.uuid)
      expect(failedExport?.status).toBe('failure')
      expect(JSON.stringify(failedExport?.result)).toContain('SR_BACKEND_FAILURE_44')
      // the remote has the backup, the good SR a DR replica, the full SR nothing
      const remote = createRemote(`file://${join(dir.path, 'dr')}`)
      await remote.open()
      expect((await listBackups(remote, sim.listVms()[0]!.uuid)).map((b) => b.timestamp)).toEqual([r.timestamp])
      await remote.close()
      const [replica] = await replicasOn('drjob', good.uuid, 1)
      expect(replica!.tags).toContain(DR_TAG)
      expect(listReplicas(xapi, ids('drjob'), full.uuid)).toEqual([])
      await waitFor('nothing left on the full SR', () => xapi.listVdis().filter((v) => v.SR === full.$ref).length === vdisBefore, 10_000)
    } finally {
      sim.setSrCapacity(full.uuid, 0)
    }
  }, 120_000)
})

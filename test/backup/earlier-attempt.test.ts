/**
 * A retried queue job does not back a VM up twice (src/backup/earlier-attempt.ts): the run of a retried
 * job (`earlierAttemptsSince` = the job's enqueue time) reports a VM whose every remote already holds a
 * backup of this job and schedule made since then from those backups; a backup older than the enqueue
 * time (an earlier scheduled run) does not count, and the earlier attempt's snapshot becomes the kept one.
 * A run removes the snapshots killed attempts of its job left (src/backup/job-snapshots.ts). Simulator,
 * real engine, local remotes.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listBackups } from '../../src/backup/catalog.js'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { TEMP_SNAPSHOT_NAME } from '../../src/backup/job-snapshots.js'
import { runBackup } from '../../src/backup/run.js'
import { backupXapi } from '../../src/backup/xapi-adapter.js'
import { tagSnapshot } from '../../src/backup/xo-records.js'
import { XapiClient } from '../../src/xapi/client.js'
import type { TaskLogEvent } from '../../src/backup/task-log.js'
import { createRemote } from '../../src/remotes/index.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, runTask, startSim } from './helpers/fixture.js'

let sim: XapiSimulator
let dir: Awaited<ReturnType<typeof makeTempDir>>

beforeAll(async () => {
  sim = await startSim()
  dir = await makeTempDir('bp-earlier-attempt-')
})

afterAll(async () => {
  await sim?.close()
  await dir?.remove()
})

/** This job's backup snapshots of the VM: uuid → exported mark. */
async function jobSnapshots(vmUuid: string, jobId = 'job1'): Promise<Map<string, string | undefined>> {
  const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  try {
    const vm = xapi.listVms().find((v) => v.uuid === vmUuid)!
    const out = new Map<string, string | undefined>()
    for (const v of xapi.listVms({ includeSnapshots: true })) {
      if (v.is_a_snapshot && v.snapshot_of === vm.$ref && v.other_config['xo:backup:job'] === jobId) out.set(v.uuid, v.other_config['xo:backup:exported'])
    }
    return out
  } finally {
    await xapi.close()
  }
}

/** What a run killed right after its snapshot leaves: a tagged snapshot no target holds. */
async function killedAttemptSnapshot(vmUuid: string): Promise<string> {
  const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  try {
    const vm = xapi.listVms().find((v) => v.uuid === vmUuid)!
    const s = await xapi.snapshotVm(vm.$ref, 'killed attempt')
    await tagSnapshot(backupXapi(xapi), s.$ref, { jobId: 'job1', scheduleId: 'sched1', vmUuid, timestampMs: Date.now() })
    return s.uuid
  } finally {
    await xapi.close()
  }
}

/** What a run killed between `VM.snapshot` and the tagging leaves (XO's temporary name). */
async function untaggedSnapshot(vmUuid: string): Promise<string> {
  const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  try {
    const vm = xapi.listVms().find((v) => v.uuid === vmUuid)!
    return (await xapi.snapshotVm(vm.$ref, TEMP_SNAPSHOT_NAME)).uuid
  } finally {
    await xapi.close()
  }
}

/** Names of every snapshot of the VM. */
async function snapshotNames(vmUuid: string): Promise<string[]> {
  const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  try {
    const vm = xapi.listVms().find((v) => v.uuid === vmUuid)!
    return xapi.listVms({ includeSnapshots: true }).filter((v) => v.is_a_snapshot && v.snapshot_of === vm.$ref).map((v) => v.name_label)
  } finally {
    await xapi.close()
  }
}

async function backupsOf(path: string, vmUuid: string): Promise<number> {
  const remote = createRemote(`file://${path}`)
  await remote.open()
  try {
    return (await listBackups(remote, vmUuid)).length
  } finally {
    await remote.close()
  }
}

describe('a retried job', () => {
  it('reports a VM an earlier attempt backed up instead of backing it up twice; an older backup does not count', async () => {
    const vm = sim.listVms()[0]!
    const remotes = { a: join(dir.path, 'a'), b: join(dir.path, 'b') }
    for (const p of Object.values(remotes)) await mkdir(p)
    const task = runTask(sim, [vm.uuid], { a: `file://${remotes.a}`, b: `file://${remotes.b}` }, { exportRetention: 10 })
    const env = { defaults, exporter: runDiskExport, signal: new AbortController().signal }

    // a run long before this job was enqueued (an earlier schedule)
    const enqueuedAt = Date.now() + 2000
    expect((await runBackup(task, env)).status).toBe('success')
    // the attempt that was killed after publishing
    await new Promise((r) => setTimeout(r, Math.max(0, enqueuedAt - Date.now()) + 1000))
    expect((await runBackup(task, env)).status).toBe('success')
    expect(await backupsOf(remotes.a, vm.uuid)).toBe(2)

    // the retry: nothing new, the VM reported from the earlier attempt's backups
    const events: TaskLogEvent[] = []
    const retry = await runBackup(task, { ...env, earlierAttemptsSince: enqueuedAt, emit: (e) => events.push(e) })
    expect(retry.status).toBe('success')
    expect(await backupsOf(remotes.a, vm.uuid)).toBe(2)
    expect(await backupsOf(remotes.b, vm.uuid)).toBe(2)
    expect(events.some((e) => e.event === 'info' && /earlier attempt of this job/.test(e.message ?? ''))).toBe(true)
    // the earlier attempt's snapshot is the one kept, marked exported
    expect([...(await jobSnapshots(vm.uuid)).values()]).toEqual(['true'])

    // a retry of a job enqueued after every backup: backed up as usual
    const later = await runBackup(task, { ...env, earlierAttemptsSince: Date.now() + 1000 })
    expect(later.status).toBe('success')
    expect(await backupsOf(remotes.a, vm.uuid)).toBe(3)
  }, 180_000)

  it('removes the snapshots killed attempts of its job left, keeps the base, and deltas from it', async () => {
    const vm = sim.listVms()[0]!
    const remote = join(dir.path, 'killed')
    await mkdir(remote)
    const task = runTask(sim, [vm.uuid], { a: `file://${remote}` }, { exportRetention: 10 })
    const env = { defaults, exporter: runDiskExport, signal: new AbortController().signal }
    expect((await runBackup(task, env)).status).toBe('success')
    const base = [...(await jobSnapshots(vm.uuid)).keys()]
    expect(base).toHaveLength(1)
    // two attempts killed after their snapshot
    const killed = [await killedAttemptSnapshot(vm.uuid), await killedAttemptSnapshot(vm.uuid)]
    expect((await jobSnapshots(vm.uuid)).size).toBe(3)
    // and one killed between VM.snapshot and its tagging: only XO's temporary name tells what it is
    const untagged = await untaggedSnapshot(vm.uuid)

    const events: TaskLogEvent[] = []
    const run = await runBackup(task, { ...env, emit: (e) => events.push(e) })
    expect(run.status).toBe('success')
    const after = await jobSnapshots(vm.uuid)
    expect(after.size).toBe(1)
    for (const k of [...killed, ...base]) expect(after.has(k)).toBe(false)
    expect(events.filter((e) => e.event === 'info' && /an interrupted run of this job left/.test(e.message ?? ''))).toHaveLength(2)
    expect(await snapshotNames(vm.uuid)).toEqual([`[XO Backup test job] ${vm.nameLabel}`])
    expect(events.some((e) => e.event === 'info' && e.message?.includes(untagged) === true)).toBe(true)
    // the killed attempts did not break the chain: this run was a delta from the base
    expect(events.some((e) => e.event === 'info' && /^delta backup against/.test(e.message ?? ''))).toBe(true)
  }, 180_000)
})

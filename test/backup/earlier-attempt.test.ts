/**
 * A retried queue job does not back a VM up twice (src/backup/earlier-attempt.ts): the run of a retried
 * job (`earlierAttemptsSince` = the job's enqueue time) reports a VM whose every remote already holds a
 * backup of this job and schedule made since then from those backups; a backup older than the enqueue
 * time (an earlier scheduled run) does not count. Simulator, real engine, local remotes.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listBackups } from '../../src/backup/catalog.js'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { runBackup } from '../../src/backup/run.js'
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

    // a retry of a job enqueued after every backup: backed up as usual
    const later = await runBackup(task, { ...env, earlierAttemptsSince: Date.now() + 1000 })
    expect(later.status).toBe('success')
    expect(await backupsOf(remotes.a, vm.uuid)).toBe(3)
  }, 180_000)
})

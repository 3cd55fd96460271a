/**
 * A backup attempt killed between `VM.snapshot` and the tagging of its snapshot leaves a snapshot no tag
 * identifies (found by `npm run chaos -- sigkill-real`: 11 such after each job's next run). As XO does, the
 * snapshot is taken under XO's temporary name and renamed once tagged; the next run removes the VM's
 * snapshots still under the temporary name (src/backup/job-snapshots.ts); a snapshot with another name (an
 * operator's, or one named as the job names its snapshots but untagged) stays. Simulator, real engine, a
 * local remote.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { TEMP_SNAPSHOT_NAME } from '../../src/backup/job-snapshots.js'
import { runBackup } from '../../src/backup/run.js'
import { XapiClient } from '../../src/xapi/client.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, runTask, startSim } from './helpers/fixture.js'

let sim: XapiSimulator
let dir: Awaited<ReturnType<typeof makeTempDir>>

beforeAll(async () => {
  sim = await startSim({ seed: 4242 })
  dir = await makeTempDir('bp-untagged-snap-')
})
afterAll(async () => {
  await sim?.close()
  await dir?.remove()
})

async function withXapi<T>(fn: (xapi: XapiClient) => Promise<T>): Promise<T> {
  const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  try {
    return await fn(xapi)
  } finally {
    await xapi.close()
  }
}

/** The VM's snapshots: uuid → its `xo:backup:job` tag. */
const snapshotsOf = (vmUuid: string) => withXapi((xapi) => {
  const vm = xapi.listVms().find((v) => v.uuid === vmUuid)!
  return Promise.resolve(new Map(xapi.listVms({ includeSnapshots: true }).filter((v) => v.is_a_snapshot && v.snapshot_of === vm.$ref).map((v) => [v.uuid, v.other_config['xo:backup:job']])))
})

describe('snapshots an attempt killed before tagging them', () => {
  it("are removed by the job's next run; an operator's snapshot stays", async () => {
    const vm = sim.listVms()[0]!
    await mkdir(join(dir.path, 'r'))
    const task = runTask(sim, [vm.uuid], { r: `file://${join(dir.path, 'r')}` })
    const env = { defaults, exporter: runDiskExport, signal: new AbortController().signal }
    const { untagged, operator } = await withXapi(async (xapi) => {
      const ref = xapi.listVms().find((v) => v.uuid === vm.uuid)!.$ref
      // what two killed attempts left: XO's temporary name, no tag
      const killed = [await xapi.snapshotVm(ref, TEMP_SNAPSHOT_NAME), await xapi.snapshotVm(ref, TEMP_SNAPSHOT_NAME)]
      const operator = [await xapi.snapshotVm(ref, 'before the upgrade'), await xapi.snapshotVm(ref, `[XO Backup ${task.job.name}] ${vm.nameLabel}`)]
      return { untagged: killed.map((s) => s.uuid), operator: operator.map((s) => s.uuid) }
    })
    expect((await runBackup(task, env)).status).toBe('success')
    const left = await snapshotsOf(vm.uuid)
    for (const u of untagged) expect(left.has(u), u).toBe(false)
    for (const o of operator) expect(left.has(o), o).toBe(true)
    // the run's own snapshot (the next delta base) is kept
    expect([...left.values()].filter((job) => job === task.job.id)).toHaveLength(1)
  }, 120_000)
})

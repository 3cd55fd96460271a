/**
 * Health check after a backup (XO's healthCheckSr / healthCheckVmsWithTags / healthCheckTimeout),
 * through the real queue and the stream pool, against the XAPI simulator (2 SRs): the new backup is
 * restored on the health-check SR, started, and must report guest tools. The simulator's guest boot is a
 * flag: `normal` reports tools right after start, `never` never does (the check then fails when its
 * timeout — a short one, the only outcome possible — expires), `manual` boots late: the test releases
 * the guest once the check's VM runs (the check waits; its timeout is long). Either way the restored VM
 * and its disks are gone afterwards. Also: a VM without the wanted tag is not checked (an info), and XO's xenstore
 * health-check script answer (failure with its message).
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { waitFor } from '../helpers/ports.js'
import type { JobSummary, TaskSummary } from '../../src/queue/task-log.js'
import type { TaskInputOf } from '../../src/queue/tasks.js'
import type { XapiClient } from '../../src/xapi/client.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { MiB } from './helpers/fixture.js'
import { startQueueHarness, type QueueHarness } from './helpers/queue-harness.js'

let sim: XapiSimulator
let xapi: XapiClient
let dir: QueueHarness['dir']
let harness: QueueHarness
let hcSr: string

function backupTask(vmUuid: string, settings: Record<string, unknown>): TaskInputOf<'backup.run'> {
  return {
    kind: 'backup.run',
    job: { id: `hc-${vmUuid.slice(0, 8)}`, name: 'hc', mode: 'delta', vms: { uuid: [vmUuid] }, settings: { '': { healthCheckSr: hcSr, ...settings } } },
    schedule: { id: 's1' },
    remotes: { r1: { url: `file://${dir.path}` } },
    xapis: { sim: harness.xapiRef() },
  }
}

const run = (task: TaskInputOf<'backup.run'>): Promise<JobSummary> => harness.run(task)

function find(tasks: TaskSummary[] | undefined, message: string): TaskSummary | undefined {
  for (const t of tasks ?? []) {
    if (t.message === message) return t
    const inner = find(t.tasks, message)
    if (inner !== undefined) return inner
  }
  return undefined
}

/** Nothing of a health check left (asked to the simulator, not the cache): no VM tagged by it, no VDI on its SR. */
async function nothingLeft(): Promise<void> {
  const vms = (await xapi.call('VM.get_all_records')) as Record<string, { is_a_snapshot: boolean; tags: string[] }>
  expect(Object.values(vms).filter((v) => !v.is_a_snapshot && v.tags.includes('xo:no-bak=Health Check'))).toEqual([])
  const srRef = (await xapi.call('SR.get_by_uuid', hcSr)) as string
  expect(await xapi.call('SR.get_VDIs', srRef)).toEqual([])
}

beforeAll(async () => {
  harness = await startQueueHarness({ redisUrl: inject('redisUrl'), proxyId: 'hc-main', dirPrefix: 'bp-health-', sim: { vms: 3, disksPerVm: 1, seed: 99, diskSizeBytes: 8 * MiB, srs: 2 } })
  ;({ sim, xapi, dir } = harness)
  hcSr = xapi.listSrs().find((s) => s.name_label === 'Sim SR 1')!.uuid
  const [a, , c] = sim.listVms()
  await xapi.call('VM.set_tags', a!.ref, ['hc'])
  await xapi.call('VM.set_tags', c!.ref, ['hc', 'xo-backup-health-check-xenstore'])
})
afterAll(() => harness?.close())

describe('health check after a backup (through the queue, simulator)', () => {
  it('passes for a VM whose guest reports its tools, and the restored VM is destroyed', async () => {
    sim.setGuestBoot('normal')
    const s = await run(backupTask(sim.listVms()[0]!.uuid, { healthCheckVmsWithTags: ['hc'], healthCheckTimeout: '5m' }))
    expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
    const hc = find(s.tasks, 'health check')
    expect(hc?.status).toBe('success')
    expect((hc?.result as { restoredVmUuid: string }).restoredVmUuid).toMatch(/^[0-9a-f-]{36}$/)
    await nothingLeft()
  }, 60_000)

  it('fails with the reason for a VM that never reports tools, and the restored VM is destroyed', async () => {
    sim.setGuestBoot('never')
    try {
      const s = await run(backupTask(sim.listVms()[0]!.uuid, { healthCheckVmsWithTags: ['hc'], healthCheckTimeout: '1500ms' }))
      expect(s.status).toBe('failure')
      const hc = find(s.tasks, 'health check')
      expect(hc?.status).toBe('failure')
      expect(JSON.stringify(hc?.result)).toMatch(/Xen tools/)
      expect(JSON.stringify(hc?.result)).toContain('"reason":"timeout"')
      await nothingLeft()
    } finally {
      sim.setGuestBoot('normal')
    }
  }, 60_000)

  it('waits for a guest that boots late: passes once its tools report, and the restored VM is destroyed', async () => {
    sim.setGuestBoot('manual')
    try {
      const h = await harness.client.enqueue({ proxy: 'hc-main' }, backupTask(sim.listVms()[0]!.uuid, { healthCheckVmsWithTags: ['hc'], healthCheckTimeout: '10m' }))
      // the check's VM is running and waiting for its tools: the guest boots now
      let running: string | undefined
      await waitFor('the health check VM running', async () => {
        const vms = (await xapi.call('VM.get_all_records')) as Record<string, { uuid: string; is_a_snapshot: boolean; tags: string[]; power_state: string }>
        running = Object.values(vms).find((v) => !v.is_a_snapshot && v.tags.includes('xo:no-bak=Health Check') && v.power_state === 'Running')?.uuid
        return running !== undefined
      }, 60_000)
      sim.reportGuestTools(running!)
      const s = await h.result()
      expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
      const hc = find(s.tasks, 'health check')
      expect(hc?.status).toBe('success')
      expect((hc?.result as { restoredVmUuid: string }).restoredVmUuid).toBe(running)
      await nothingLeft()
    } finally {
      sim.setGuestBoot('normal')
    }
  }, 90_000)

  it('a VM without the wanted tag is not checked; a failing xenstore health-check script fails the check', async () => {
    const skipped = await run(backupTask(sim.listVms()[1]!.uuid, { healthCheckVmsWithTags: ['hc'] }))
    expect(skipped.status).toBe('success')
    expect(find(skipped.tasks, 'health check')?.infos?.[0]?.message).toMatch(/doesn't match the health check's tags/)

    sim.setGuestScript('failure')
    try {
      const s = await run(backupTask(sim.listVms()[2]!.uuid, { healthCheckVmsWithTags: ['hc'] }))
      expect(s.status).toBe('failure')
      expect(JSON.stringify(find(s.tasks, 'health check')?.result)).toMatch(/Backup health check script failed with message the xapi-sim guest script failed/)
      await nothingLeft()
    } finally {
      sim.setGuestScript('success')
    }
  }, 60_000)
})

/**
 * XAPI faults during real backup runs (the simulator's faults, through the queue, the real engine and a
 * local remote): each run ends with a coded error (or succeeds where the fault is survivable), the VM keeps
 * no snapshot of a failed run, and nothing is published: the remote lists no backup of a failed run and
 * `verify --full` finds no problem. A stalled export ends at the export inactivity timeout, shortened
 * here by config (`backup.exportInactivityTimeoutMs`, 10 s instead of 5 minutes; the other cases' streams
 * never pause that long).
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { listBackups } from '../../src/backup/catalog.js'
import { verifyRemote } from '../../src/backup/verify.js'
import { silentLogger } from '../../src/common/log.js'
import { compileConfig } from '../../src/config/index.js'
import { EnqueueClient } from '../../src/queue/client.js'
import { SealKey } from '../../src/queue/seal.js'
import { createRemote } from '../../src/remotes/index.js'
import { builtinProcessors } from '../../src/workers/builtin-processors.js'
import { ProxyRuntime } from '../../src/workers/proxy.js'
import { XapiClient } from '../../src/xapi/client.js'
import type { SimFault } from '../../src/xapi/sim/faults.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { startSim, MiB } from './helpers/fixture.js'
import { proxyConfig } from './helpers/proxy-config.js'

const sealText = SealKey.generate().export()
const redisUrl = inject('redisUrl')
const STALL_TIMEOUT_S = 10
const proxyId = `bk-faults-${Math.random().toString(36).slice(2, 8)}`
let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }
let client: EnqueueClient
let proxy: ProxyRuntime

beforeAll(async () => {
  sim = await startSim({ vms: 7, seed: 1818, diskSizeBytes: 16 * MiB })
  dir = await makeTempDir('bp-xapi-faults-')
  proxy = new ProxyRuntime({ config: compileConfig({ ...proxyConfig(redisUrl, sealText, proxyId), backup: { exportInactivityTimeoutMs: `${STALL_TIMEOUT_S}s` } }), processors: builtinProcessors({ standIns: false }), sealKey: SealKey.fromString(sealText), logger: silentLogger })
  await proxy.start()
  client = new EnqueueClient({ redis: compileConfig({ redis: { url: redisUrl } }).redis, sealKey: SealKey.fromString(sealText), attempts: 1 })
})
afterAll(async () => {
  await proxy?.shutdown()
  await client?.close()
  await sim?.close()
  await dir?.remove()
})

/** `code`: the error of the VM's task in the task log (the run itself fails with E_BACKUP, XO's shape) */
const cases: { name: string; fault: (vdi: string) => SimFault; outcome: 'success' | 'failure'; code?: string; message?: RegExp }[] = [
  { name: 'connection reset mid-export', fault: (vdiUuid) => ({ kind: 'reset', afterBytes: 3 * MiB, vdiUuid }), outcome: 'failure', code: 'E_XAPI' },
  { name: 'HTTP 500', fault: (vdiUuid) => ({ kind: 'http-error', status: 500, vdiUuid }), outcome: 'failure', code: 'E_XAPI' },
  { name: 'corrupt byte in the stream', fault: (vdiUuid) => ({ kind: 'corrupt', offset: 1024, vdiUuid }), outcome: 'failure', code: 'E_VHD_CORRUPT' },
  { name: 'stalled export', fault: (vdiUuid) => ({ kind: 'stall', afterBytes: 256 * 1024, vdiUuid }), outcome: 'failure', code: 'E_XAPI', message: /stalled: no data for 10000 ms/ },
  { name: 'expired session', fault: () => ({ kind: 'expire-session' }), outcome: 'success' },
  { name: 'slow export', fault: (vdiUuid) => ({ kind: 'slow', bytesPerSecond: 16 * MiB, vdiUuid }), outcome: 'success' },
]

describe('XAPI faults during backup runs', () => {
  for (const [i, c] of cases.entries()) {
    it(`${c.name}: ${c.outcome === 'success' ? 'the run succeeds, one snapshot kept (delta base)' : 'a coded error, no snapshot left'}, nothing corrupt published`, async () => {
      const vm = sim.listVms()[i]!
      const remoteUrl = `file://${dir.path}`
      sim.clearFaults()
      sim.setFault(c.fault(vm.vdis[0]!.uuid))
      try {
        const h = await client.enqueue({ proxy: proxyId }, {
          kind: 'backup.run',
          job: { id: `faults-${i}`, name: c.name, mode: 'delta', vms: { uuid: [vm.uuid] }, settings: { '': {} } },
          schedule: { id: 's1' },
          remotes: { local: { url: remoteUrl } },
          xapis: { sim: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
        })
        const s = await h.result()
        const failed = (await h.taskLog()).flatMap((e) => (e.event === 'end' && e.status === 'failure' ? [(e.result ?? {}) as { code?: string; message?: string }] : []))
        if (process.env.BACKUP_PROXY_TEST_FIGURES === '1') console.log(`[figures] ${c.name}: ${s.status} ${failed.map((f) => `${f.code}: ${f.message?.slice(0, 120)}`).join(' | ')}`)
        expect(s.status, JSON.stringify(s.error)).toBe(c.outcome)
        if (c.code !== undefined) {
          expect(s.error?.code).toBe('E_BACKUP')
          expect(failed.map((f) => f.code)).toContain(c.code)
          if (c.message !== undefined) expect(failed.find((f) => f.code === c.code)?.message).toMatch(c.message)
        }
      } finally {
        sim.clearFaults()
      }
      const remote = createRemote(remoteUrl)
      await remote.open()
      try {
        expect((await listBackups(remote, vm.uuid)).length).toBe(c.outcome === 'success' ? 1 : 0)
        const report = await verifyRemote(remote, { vmUuid: vm.uuid, full: true })
        expect(report.problems).toEqual([])
      } finally {
        await remote.close()
      }
      const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
      try {
        const snapshots = xapi.listVms({ includeSnapshots: true }).filter((v) => v.is_a_snapshot && v.snapshot_of === vm.ref)
        // a successful delta run keeps one snapshot (the next delta's base); a failed one keeps none
        expect(snapshots.length).toBe(c.outcome === 'success' ? 1 : 0)
      } finally {
        await xapi.close()
      }
    })
  }
})

/**
 * The simulator's pool operations a whole-VM restore, a replication and a health check build on, called
 * directly as XAPI's clients call them (test/backup/restore-task, replication and health-check use them
 * end to end): several SRs and networks, `VM.create`, `VDI.create`, `VBD.create` (a disk, an empty CD
 * drive; XAPI's refusals), `VIF.create`, `VM.start` (refused while blocked; guest metrics once the guest
 * boots: at once, or late when released), `VM.clean_shutdown`, `VM.hard_shutdown`, `VM.destroy`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { XapiClient } from '../../src/xapi/client.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { MiB, startSim } from './helpers/fixture.js'

let sim: XapiSimulator
let xapi: XapiClient

beforeAll(async () => {
  sim = await startSim({ vms: 1, diskSizeBytes: 4 * MiB, srs: 3, networks: 2 })
  xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
})
afterAll(async () => {
  await xapi?.close()
  await sim?.close()
})

const record = (cls: string, ref: string) => xapi.call(`${cls}.get_record`, ref) as Promise<Record<string, unknown>>
const failureCode = (p: Promise<unknown>) => p.then(() => 'resolved', (e: unknown) => (e as { xapiCode?: string }).xapiCode ?? String(e))

describe('simulator: the pool operations of a restore, a replication and a health check', () => {
  it('creates a VM with a disk, an empty CD drive and a VIF; starts it, reports its guest, shuts it down and destroys it', async () => {
    const srs = xapi.listSrs().sort((a, b) => a.name_label.localeCompare(b.name_label))
    expect(srs.map((s) => s.name_label)).toEqual(['Local storage', 'Sim SR 1', 'Sim SR 2'])
    const networks = (await xapi.call('network.get_all')) as string[]
    expect(networks.length).toBeGreaterThanOrEqual(2)

    const vmRef = (await xapi.call('VM.create', { name_label: 'created', name_description: '', memory_static_max: 2 * 2 ** 30, VCPUs_max: 2, VCPUs_at_startup: 2, HVM_boot_policy: 'BIOS order', blocked_operations: { start: 'Importing…' }, other_config: {} })) as string
    expect(await record('VM', vmRef)).toMatchObject({ power_state: 'Halted', VBDs: [], VIFs: [], is_a_template: false })
    expect(((await record('VM', vmRef)).other_config as Record<string, string>).mac_seed).toMatch(/^[0-9a-f-]{36}$/)

    const vdiRef = (await xapi.call('VDI.create', { name_label: 'disk', SR: srs[1]!.$ref, virtual_size: 4 * MiB, type: 'user', sharable: false, read_only: false, other_config: {} })) as string
    expect((await record('VDI', vdiRef)).SR).toBe(srs[1]!.$ref)
    await xapi.call('VBD.create', { VM: vmRef, VDI: vdiRef, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', empty: false, other_config: {} })
    const cdRef = (await xapi.call('VBD.create', { VM: vmRef, VDI: 'OpaqueRef:NULL', userdevice: '3', bootable: false, mode: 'RO', type: 'CD', empty: true, other_config: {} })) as string
    expect(await record('VBD', cdRef)).toMatchObject({ type: 'CD', empty: true, VDI: 'OpaqueRef:NULL' })
    expect(await failureCode(xapi.call('VBD.create', { VM: vmRef, VDI: vdiRef, userdevice: '0', type: 'Disk', other_config: {} }))).toBe('DEVICE_ALREADY_EXISTS')
    expect(await failureCode(xapi.call('VBD.create', { VM: vmRef, VDI: 'OpaqueRef:NULL', userdevice: '1', type: 'Disk', other_config: {} }))).toBe('VBD_NOT_EMPTY')
    await xapi.call('VIF.create', { VM: vmRef, network: networks[1], device: '0', MAC: '02:00:00:00:00:09', MTU: 1500, other_config: {} })
    expect((await record('VM', vmRef)).VIFs).toHaveLength(1)

    // start: refused while blocked, then running; the guest reports its tools
    expect(await failureCode(xapi.call('VM.start', vmRef, false, false))).toBe('OPERATION_BLOCKED')
    await xapi.call('VM.set_blocked_operations', vmRef, {})
    sim.setGuestBoot('normal')
    await xapi.call('VM.start', vmRef, false, false)
    const running = await xapi.waitObject('VM', vmRef, { timeoutMs: 10_000, predicate: (vm) => vm.power_state === 'Running' && vm.guest_metrics !== 'OpaqueRef:NULL' })
    expect((await record('VM_guest_metrics', running.guest_metrics as string)).PV_drivers_detected).toBe(true)
    expect(await failureCode(xapi.call('VDI.destroy', vdiRef))).toBe('VDI_IN_USE')
    expect(await failureCode(xapi.call('VM.destroy', vmRef))).toBe('VM_BAD_POWER_STATE')
    await xapi.call('VM.clean_shutdown', vmRef)
    expect(await record('VM', vmRef)).toMatchObject({ power_state: 'Halted', guest_metrics: 'OpaqueRef:NULL' })

    // a guest that boots late: no metrics until released, then there
    sim.setGuestBoot('manual')
    try {
      await xapi.call('VM.start', vmRef, false, false)
      expect(await record('VM', vmRef)).toMatchObject({ power_state: 'Running', guest_metrics: 'OpaqueRef:NULL' })
      sim.reportGuestTools((await record('VM', vmRef)).uuid as string)
      expect((await record('VM', vmRef)).guest_metrics).not.toBe('OpaqueRef:NULL')
    } finally {
      sim.setGuestBoot('normal')
    }
    await xapi.call('VM.hard_shutdown', vmRef)
    expect((await record('VM', vmRef)).power_state).toBe('Halted')
    await xapi.call('VM.destroy', vmRef)
    expect(await failureCode(record('VM', vmRef))).toBe('HANDLE_INVALID')
    await xapi.call('VDI.destroy', vdiRef)
    expect(await failureCode(record('VDI', vdiRef))).toBe('HANDLE_INVALID')
  })
})

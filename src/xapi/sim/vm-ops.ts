/**
 * What a restore, a health check and a replication need from the simulated pool beyond backup:
 * more SRs (with an optional capacity, so one can fill up), more networks (each with a PIF carrying its
 * VLAN, as XO matches networks by name and VLAN), `VM.create`, `VBD.create`, `VIF.create`, `VIF.destroy`,
 * `VM.start`, `VM.clean_shutdown`/`hard_shutdown`, `VDI.clone`, and the guest metrics a started VM reports once its
 * guest tools run. Records carry XAPI's field names and value shapes.
 *
 * Guest boot behaviour is a flag (never timing): `normal` reports guest metrics (`PV_drivers_detected`)
 * on the event-loop turn after `VM.start` returns, `never` never does (a VM without tools), `manual` waits
 * for `reportGuestTools` (a VM that boots late, released by the test). A running VM's VDIs are attached
 * (`currently_attached`), so they cannot be destroyed until it is shut down, as in XAPI. A guest asked to
 * run XO's health-check script (xenstore `vm-data/xo-backup-health-check` = `planned`) answers with
 * `guestScript` when it reports its tools.
 */
import type { SimPool } from './pool.js'
import { networkRecord, pifRecord, srRecord, vbdFields, vifFields, vmFields } from './record-fields.js'
import { NULL_REF, XapiFailure, text, type XapiRecord, type XapiValue } from './store.js'

export type GuestBoot = 'normal' | 'never' | 'manual'
/** what the guest's XO health-check script answers when asked (`vm-data/xo-backup-health-check` = planned) */
export type GuestScript = 'success' | 'failure' | 'none'

type Fields = Record<string, unknown>

function asFields(v: unknown, what: string): Fields {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new XapiFailure('FIELD_TYPE_ERROR', [what])
  return v as Fields
}
function map(v: unknown): Record<string, XapiValue> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (structuredClone(v) as Record<string, XapiValue>) : {}
}
function str(v: unknown, fallback = ''): string {
  return typeof v === 'string' ? v : fallback
}
function num(v: unknown, field: string): number {
  const n = typeof v === 'string' ? Number(v) : v
  if (typeof n !== 'number' || !Number.isFinite(n)) throw new XapiFailure('FIELD_TYPE_ERROR', [field])
  return n
}

export class SimVmOps {
  guestBoot: GuestBoot = 'normal'
  guestScript: GuestScript = 'success'

  constructor(private readonly pool: SimPool) {
    // the pool's first network is the management one: its untagged PIF on eth0 comes with the pool
  }

  private get store(): SimPool['store'] {
    return this.pool.store
  }

  /** A new SR; `capacityBytes` > 0 makes imports fail with SR_BACKEND_FAILURE_44 once its VDIs' allocation would exceed it. */
  addSr(nameLabel: string, capacityBytes = 0): string {
    const ref = this.pool.newRef()
    this.store.add('SR', ref, srRecord(this.pool.newUuid(), nameLabel, capacityBytes))
    return ref
  }

  /** A new network with one PIF (`VLAN` -1 = untagged). */
  addNetwork(nameLabel: string, bridge: string, vlan: number): string {
    const ref = this.pool.newRef()
    this.store.add('network', ref, networkRecord(this.pool.newUuid(), nameLabel, bridge))
    this.addPif(ref, `eth${this.store.all('PIF').length}`, vlan)
    return ref
  }

  private addPif(networkRef: string, device: string, vlan: number): void {
    const ref = this.pool.newRef()
    this.store.add('PIF', ref, { ...pifRecord(this.pool.newUuid(), this.pool.hostRef, networkRef), device, VLAN: vlan, management: false })
    this.store.update('network', networkRef, (r) => (r.PIFs as string[]).push(ref))
  }

  /** Bytes allocated on an SR (its VDIs' present blocks). */
  srAllocatedBytes(srRef: string): number {
    return (this.store.get('SR', srRef).VDIs as string[]).reduce((sum, vdi) => sum + this.pool.allocatedBytes(vdi), 0)
  }

  /** Throws SR_BACKEND_FAILURE_44 (XAPI's "insufficient space") when `extraBytes` more do not fit on the VDI's SR. */
  checkSpace(vdiRef: string, extraBytes: number): void {
    const srRef = text(this.store.get('VDI', vdiRef).SR)
    const capacity = Number(this.store.get('SR', srRef).physical_size)
    if (capacity > 0 && this.srAllocatedBytes(srRef) + extraBytes > capacity) {
      throw new XapiFailure('SR_BACKEND_FAILURE_44', ['', 'There is insufficient space', ''])
    }
  }

  /** `VM.create`: a halted VM from the record (XAPI's required fields checked), no VBDs or VIFs yet. */
  createVm(input: unknown): string {
    const r = asFields(input, 'VM record')
    for (const f of ['name_label', 'memory_static_max', 'VCPUs_max', 'VCPUs_at_startup', 'HVM_boot_policy']) {
      if (r[f] === undefined) throw new XapiFailure('FIELD_TYPE_ERROR', [f])
    }
    const memMax = num(r.memory_static_max, 'memory_static_max')
    const other = map(r.other_config)
    // XAPI generates a MAC seed when the record has none
    other.mac_seed ??= this.pool.newUuid()
    const ref = this.pool.newRef()
    this.store.add('VM', ref, {
      ...vmFields(),
      uuid: this.pool.newUuid(),
      name_label: str(r.name_label),
      name_description: str(r.name_description),
      power_state: 'Halted',
      is_a_template: r.is_a_template === true,
      is_a_snapshot: false,
      is_control_domain: false,
      snapshot_of: NULL_REF,
      snapshots: [],
      snapshot_time: '19700101T00:00:00Z',
      parent: NULL_REF,
      resident_on: NULL_REF,
      affinity: str(r.affinity, NULL_REF),
      VBDs: [],
      VIFs: [],
      guest_metrics: NULL_REF,
      memory_static_max: memMax,
      memory_static_min: r.memory_static_min === undefined ? memMax : num(r.memory_static_min, 'memory_static_min'),
      memory_dynamic_max: r.memory_dynamic_max === undefined ? memMax : num(r.memory_dynamic_max, 'memory_dynamic_max'),
      memory_dynamic_min: r.memory_dynamic_min === undefined ? memMax : num(r.memory_dynamic_min, 'memory_dynamic_min'),
      VCPUs_max: num(r.VCPUs_max, 'VCPUs_max'),
      VCPUs_at_startup: num(r.VCPUs_at_startup, 'VCPUs_at_startup'),
      VCPUs_params: map(r.VCPUs_params),
      tags: Array.isArray(r.tags) ? r.tags.map(String) : [],
      other_config: other,
      blocked_operations: map(r.blocked_operations),
      current_operations: {},
      allowed_operations: ['start', 'destroy', 'snapshot', 'export'],
      platform: map(r.platform),
      HVM_boot_policy: str(r.HVM_boot_policy),
      HVM_boot_params: map(r.HVM_boot_params),
      PV_bootloader: str(r.PV_bootloader),
      PV_kernel: str(r.PV_kernel),
      PV_ramdisk: str(r.PV_ramdisk),
      PV_args: str(r.PV_args),
      PV_bootloader_args: str(r.PV_bootloader_args),
      PV_legacy_args: str(r.PV_legacy_args),
      xenstore_data: map(r.xenstore_data),
      actions_after_crash: str(r.actions_after_crash, 'restart'),
      actions_after_reboot: str(r.actions_after_reboot, 'restart'),
      actions_after_shutdown: str(r.actions_after_shutdown, 'destroy'),
      domain_type: str(r.domain_type, r.HVM_boot_policy === '' ? 'pv' : 'hvm'),
    })
    return ref
  }

  /** `VBD.create`: refuses a userdevice already used on the VM; a VBD without VDI is an empty drive. */
  createVbd(input: unknown): string {
    const r = asFields(input, 'VBD record')
    const vmRef = str(r.VM)
    const vm = this.store.get('VM', vmRef)
    const vdiRef = str(r.VDI, NULL_REF)
    const empty = vdiRef === NULL_REF || r.empty === true
    if (!empty) this.store.get('VDI', vdiRef)
    const userdevice = str(r.userdevice)
    if (!/^\d+$/.test(userdevice)) throw new XapiFailure('FIELD_TYPE_ERROR', ['userdevice'])
    for (const other of vm.VBDs as string[]) {
      if (this.store.get('VBD', other).userdevice === userdevice) throw new XapiFailure('DEVICE_ALREADY_EXISTS', [userdevice])
    }
    const type = str(r.type, 'Disk')
    if (type === 'Disk' && empty) throw new XapiFailure('VBD_NOT_EMPTY', ['a Disk VBD needs a VDI'])
    const ref = this.pool.newRef()
    this.store.add('VBD', ref, {
      ...vbdFields(),
      uuid: this.pool.newUuid(),
      VM: vmRef,
      VDI: empty ? NULL_REF : vdiRef,
      device: '',
      userdevice,
      bootable: r.bootable === true,
      mode: str(r.mode, type === 'Disk' ? 'RW' : 'RO'),
      type,
      empty,
      currently_attached: false,
      unpluggable: r.unpluggable === true,
      other_config: map(r.other_config),
      qos_algorithm_type: str(r.qos_algorithm_type),
      qos_algorithm_params: map(r.qos_algorithm_params),
    })
    this.store.update('VM', vmRef, (v) => (v.VBDs as string[]).push(ref))
    if (!empty) this.store.update('VDI', vdiRef, (v) => (v.VBDs as string[]).push(ref))
    return ref
  }

  /** `VIF.create` on a network of the pool; refuses a device already used on the VM. */
  createVif(input: unknown): string {
    const r = asFields(input, 'VIF record')
    const vmRef = str(r.VM)
    const vm = this.store.get('VM', vmRef)
    const networkRef = str(r.network)
    const network = this.store.get('network', networkRef)
    const device = str(r.device)
    if (!/^\d+$/.test(device)) throw new XapiFailure('FIELD_TYPE_ERROR', ['device'])
    for (const other of vm.VIFs as string[]) if (this.store.get('VIF', other).device === device) throw new XapiFailure('DEVICE_ALREADY_EXISTS', [device])
    const ref = this.pool.newRef()
    const mac = str(r.MAC)
    this.store.add('VIF', ref, {
      ...vifFields(),
      uuid: this.pool.newUuid(),
      VM: vmRef,
      network: networkRef,
      device,
      MAC: mac === '' ? `02:00:5e:${this.pool.newUuid().slice(0, 6).replace(/(..)(..)(..)/, '$1:$2:$3')}` : mac,
      MTU: r.MTU === undefined ? Number(network.MTU) : num(r.MTU, 'MTU'),
      currently_attached: false,
      other_config: map(r.other_config),
    })
    this.store.update('VM', vmRef, (v) => (v.VIFs as string[]).push(ref))
    this.store.update('network', networkRef, (n) => (n.VIFs as string[]).push(ref))
    return ref
  }

  destroyVif(vifRef: string): void {
    const vif = this.store.get('VIF', vifRef)
    const vmRef = text(vif.VM)
    if (this.store.has('VM', vmRef)) this.store.update('VM', vmRef, (v) => (v.VIFs = (v.VIFs as string[]).filter((x) => x !== vifRef)))
    const net = text(vif.network)
    if (this.store.has('network', net)) this.store.update('network', net, (n) => (n.VIFs = (n.VIFs as string[]).filter((x) => x !== vifRef)))
    this.store.remove('VIF', vifRef)
  }

  /** `VM.start`: blocked operations, power state and disks checked; the guest reports tools per `guestBoot`. */
  start(vmRef: string): void {
    const vm = this.store.get('VM', vmRef)
    const blocked = vm.blocked_operations as Record<string, XapiValue>
    if (blocked.start !== undefined) throw new XapiFailure('OPERATION_BLOCKED', [vmRef, text(blocked.start)])
    if (vm.is_a_snapshot === true || vm.is_a_template === true) throw new XapiFailure('OPERATION_NOT_ALLOWED', ['start of a snapshot or template'])
    if (vm.power_state !== 'Halted') throw new XapiFailure('VM_BAD_POWER_STATE', [vmRef, 'halted', text(vm.power_state).toLowerCase()])
    const vbds = vm.VBDs as string[]
    for (const vbd of vbds) {
      const r = this.store.get('VBD', vbd)
      if (r.empty !== true && !this.store.has('VDI', text(r.VDI))) throw new XapiFailure('VDI_MISSING', [text(r.VDI)])
    }
    for (const vbd of vbds) this.store.update('VBD', vbd, (r) => (r.currently_attached = r.empty !== true))
    for (const vif of vm.VIFs as string[]) this.store.update('VIF', vif, (r) => (r.currently_attached = true))
    this.store.update('VM', vmRef, (r) => {
      r.power_state = 'Running'
      r.resident_on = this.pool.hostRef
    })
    // the guest boots "a while" after start: a later turn of the event loop, never a timer
    if (this.guestBoot === 'normal') setImmediate(() => this.reportGuestTools(vmRef))
  }

  /** The guest of a running VM reports its tools (guest metrics with `PV_drivers_detected`). */
  reportGuestTools(vmRef: string): void {
    if (!this.store.has('VM', vmRef) || this.store.get('VM', vmRef).power_state !== 'Running') return
    const ref = this.pool.newRef()
    this.store.add('VM_guest_metrics', ref, {
      uuid: this.pool.newUuid(),
      os_version: { name: 'xapi-sim guest' },
      PV_drivers_version: { major: '9', minor: '4', micro: '0' },
      PV_drivers_up_to_date: true,
      PV_drivers_detected: true,
      networks: {},
      other: {},
      live: true,
      other_config: {},
    })
    this.store.update('VM', vmRef, (r) => (r.guest_metrics = ref))
    const xs = this.store.get('VM', vmRef).xenstore_data as Record<string, XapiValue>
    if (xs['vm-data/xo-backup-health-check'] === 'planned' && this.guestScript !== 'none') {
      const answer: Record<string, XapiValue> = { 'vm-data/xo-backup-health-check': this.guestScript }
      if (this.guestScript === 'failure') answer['vm-data/xo-backup-health-check-error'] = 'the xapi-sim guest script failed'
      this.store.update('VM', vmRef, (r) => (r.xenstore_data = { ...xs, ...answer }))
    }
  }

  /** `VM.clean_shutdown` / `VM.hard_shutdown`: halted, disks detached, guest metrics gone. */
  shutdown(vmRef: string): void {
    const vm = this.store.get('VM', vmRef)
    if (vm.power_state !== 'Running') throw new XapiFailure('VM_BAD_POWER_STATE', [vmRef, 'running', text(vm.power_state).toLowerCase()])
    for (const vbd of vm.VBDs as string[]) this.store.update('VBD', vbd, (r) => (r.currently_attached = false))
    for (const vif of vm.VIFs as string[]) this.store.update('VIF', vif, (r) => (r.currently_attached = false))
    this.dropGuestMetrics(vm)
    this.store.update('VM', vmRef, (r) => {
      r.power_state = 'Halted'
      r.resident_on = NULL_REF
      r.guest_metrics = NULL_REF
    })
  }

  /**
   * `VDI.clone`: a new VDI on the same SR with the same content (its blocks shared copy-on-write, as a
   * thin SR's clone is), record fields copied, no VBDs; what a replication chains its next delta onto.
   */
  cloneVdi(vdiRef: string): string {
    const src = this.store.get('VDI', vdiRef)
    const content = this.pool.disks.get(vdiRef)
    if (content === undefined) throw new XapiFailure('HANDLE_INVALID', ['VDI', vdiRef])
    const ref = this.pool.newRef()
    this.pool.disks.set(ref, content.copy())
    this.pool.vdiTimes.set(ref, Date.now())
    const record = structuredClone(src)
    this.store.add('VDI', ref, { ...record, uuid: this.pool.newUuid(), VBDs: [], snapshots: [], is_a_snapshot: false, snapshot_of: NULL_REF, current_operations: {} })
    this.store.update('SR', text(src.SR), (r) => (r.VDIs as string[]).push(ref))
    return ref
  }

  /** Before `VM.destroy`: its guest metrics go with it. */
  dropGuestMetrics(vm: XapiRecord): void {
    const gm = text(vm.guest_metrics ?? NULL_REF)
    if (this.store.has('VM_guest_metrics', gm)) this.store.remove('VM_guest_metrics', gm)
  }
}

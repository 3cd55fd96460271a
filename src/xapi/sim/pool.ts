/**
 * The simulated pool: one host, one SR, one network, N VMs with K disks each, and the operations
 * backup needs (snapshot/checkpoint, destroy, writes between snapshots, tasks). Records carry the fields
 * XAPI really has for those classes (a useful subset, same names and value shapes), uuids and refs are
 * deterministic from the seed, and each VDI's bytes live in a `DiskContent`.
 */
import { DiskContent, mix, prng } from './disk-content.js'
import { VHD_BLOCK_BYTES } from './vhd-encoder.js'
import { NULL_REF, ObjectStore, XapiFailure, text, type XapiRecord, type XapiValue } from './store.js'
import { networkRecord, pifRecord, srRecord, vbdFields, vdiFields, vifFields, vmFields } from './record-fields.js'

interface PoolOptions {
  vms: number
  diskSizeBytes: number
  disksPerVm: number
  fillRatio: number
  seed: number
  hostAddress: string
}

export interface SimVmInfo {
  uuid: string
  ref: string
  nameLabel: string
  vdis: { uuid: string; ref: string; virtualSizeBytes: number }[]
}

/** XAPI's datetime format: `20241125T22:30:00Z`. */
export function xapiDateTime(date: Date): string {
  return date.toISOString().replace(/[-]/g, '').replace(/\.\d{3}Z$/, 'Z')
}

export class SimPool {
  readonly store = new ObjectStore()
  readonly disks = new Map<string, DiskContent>()
  /** VDI ref → modification time (the VHD timestamp), Unix ms */
  readonly vdiTimes = new Map<string, number>()
  readonly poolRef: string
  readonly hostRef: string
  readonly srRef: string
  readonly networkRef: string
  private readonly nextRandom: () => number
  private generation = 1
  private writeCount = 0
  private createdVdis = 0

  constructor(readonly options: PoolOptions) {
    this.nextRandom = prng(mix(options.seed, 0x0b1ec7))
    this.poolRef = this.newRef()
    this.hostRef = this.newRef()
    this.srRef = this.newRef()
    this.networkRef = this.newRef()
    const s = this.store
    s.add('pool', this.poolRef, {
      uuid: this.newUuid(),
      name_label: 'xapi-sim pool',
      name_description: 'simulated by backup-proxy',
      master: this.hostRef,
      default_SR: this.srRef,
      other_config: {},
      tags: [],
    })
    s.add('host', this.hostRef, {
      uuid: this.newUuid(),
      name_label: 'xapi-sim host',
      address: options.hostAddress,
      enabled: true,
      PIFs: [],
      API_version_major: 2,
      API_version_minor: 21,
      software_version: { product_brand: 'XCP-ng', product_version: '8.3.0', xapi: '24.19' },
      other_config: {},
      tags: [],
    })
    s.add('SR', this.srRef, srRecord(this.newUuid(), 'Local storage', 0))
    s.add('network', this.networkRef, networkRecord(this.newUuid(), 'Pool-wide network associated with eth0', 'xenbr0'))
    for (let v = 0; v < options.vms; v++) this.createVm(v)
    // after the VMs, so their uuids do not depend on it
    const pifRef = this.newRef()
    s.add('PIF', pifRef, pifRecord(this.newUuid(), this.hostRef, this.networkRef))
    for (const [cls, ref] of [['host', this.hostRef], ['network', this.networkRef]] as const) s.update(cls, ref, (r) => (r.PIFs as string[]).push(pifRef))
  }

  newUuid(): string {
    const hex = Array.from({ length: 4 }, () => this.nextRandom().toString(16).padStart(8, '0')).join('')
    // RFC 4122 version 4 / variant 1 bits, so tools that check UUIDs accept them
    const h = hex.slice(0, 12) + '4' + hex.slice(13, 16) + ((parseInt(hex[16] ?? '0', 16) & 3) | 8).toString(16) + hex.slice(17)
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`
  }

  newRef(): string {
    return `OpaqueRef:${this.newUuid()}`
  }

  private createVm(index: number): void {
    const s = this.store
    const vmRef = this.newRef()
    const vbds: string[] = []
    s.add('VM', vmRef, {
      ...vmFields(),
      uuid: this.newUuid(),
      name_label: `sim-vm-${index}`,
      name_description: 'VM of the XAPI simulator',
      power_state: 'Running',
      is_a_template: false,
      is_a_snapshot: false,
      is_control_domain: false,
      snapshot_of: NULL_REF,
      snapshots: [],
      snapshot_time: xapiDateTime(new Date(0)),
      parent: NULL_REF,
      resident_on: this.hostRef,
      affinity: NULL_REF,
      VBDs: vbds,
      VIFs: [],
      memory_static_max: 1024 ** 3,
      memory_dynamic_max: 1024 ** 3,
      VCPUs_max: 2,
      VCPUs_at_startup: 2,
      tags: [],
      other_config: {},
      blocked_operations: {},
      current_operations: {},
      allowed_operations: ['snapshot', 'checkpoint', 'clean_shutdown', 'export'],
      platform: {},
      HVM_boot_policy: 'BIOS order',
      PV_bootloader: '',
    })
    for (let d = 0; d < this.options.disksPerVm; d++) {
      const vdiRef = this.newRef()
      const lineage = index * 64 + d + 1
      this.disks.set(vdiRef, DiskContent.initial(this.options.seed, lineage, this.options.diskSizeBytes, this.options.fillRatio))
      this.vdiTimes.set(vdiRef, Date.now())
      s.add('VDI', vdiRef, { ...this.vdiRecord(`sim-vm-${index} disk ${d}`, false, NULL_REF), physical_size: this.allocatedBytes(vdiRef) })
      this.attach(vmRef, vdiRef, d, true)
    }
    const vifRef = this.newRef()
    s.add('VIF', vifRef, {
      ...vifFields(),
      uuid: this.newUuid(),
      VM: vmRef,
      network: this.networkRef,
      device: '0',
      MAC: ['02', '00', '00', (index >> 16) & 0xff, (index >> 8) & 0xff, index & 0xff].map((x) => x.toString(16).padStart(2, '0')).join(':'),
      MTU: 1500,
      currently_attached: true,
      other_config: {},
    })
    s.update('VM', vmRef, (r) => (r.VIFs as string[]).push(vifRef))
    s.update('network', this.networkRef, (r) => (r.VIFs as string[]).push(vifRef))
  }

  private vdiRecord(nameLabel: string, isSnapshot: boolean, snapshotOf: string): XapiRecord {
    const uuid = this.newUuid()
    return {
      ...vdiFields(uuid),
      uuid,
      name_label: nameLabel,
      name_description: '',
      SR: this.srRef,
      VBDs: [],
      virtual_size: this.options.diskSizeBytes,
      physical_size: 0,
      type: 'user',
      sharable: false,
      read_only: false,
      managed: true,
      missing: false,
      is_a_snapshot: isSnapshot,
      snapshot_of: snapshotOf,
      snapshots: [],
      snapshot_time: xapiDateTime(isSnapshot ? new Date() : new Date(0)),
      parent: NULL_REF,
      other_config: {},
      sm_config: {},
      xenstore_data: {},
      tags: [],
      current_operations: {},
      allowed_operations: ['snapshot', 'clone', 'destroy'],
      cbt_enabled: false,
    }
  }

  private attach(vmRef: string, vdiRef: string, position: number, attached: boolean): string {
    const s = this.store
    const vbdRef = this.newRef()
    s.add('VBD', vbdRef, {
      ...vbdFields(),
      uuid: this.newUuid(),
      VM: vmRef,
      VDI: vdiRef,
      device: `xvd${String.fromCharCode(97 + position)}`,
      userdevice: String(position),
      bootable: position === 0,
      mode: 'RW',
      type: 'Disk',
      empty: false,
      currently_attached: attached,
      unpluggable: true,
      other_config: {},
      qos_algorithm_type: '',
      qos_algorithm_params: {},
    })
    s.update('VM', vmRef, (r) => (r.VBDs as string[]).push(vbdRef))
    s.update('VDI', vdiRef, (r) => (r.VBDs as string[]).push(vbdRef))
    s.update('SR', this.srRef, (r) => {
      const vdis = r.VDIs as string[]
      if (!vdis.includes(vdiRef)) vdis.push(vdiRef)
    })
    return vbdRef
  }

  /** Bytes of the VDI's present blocks (what XAPI reports as `physical_size` on a thin SR). */
  allocatedBytes(vdiRef: string): number {
    return (this.disks.get(vdiRef)?.generations.size ?? 0) * VHD_BLOCK_BYTES
  }

  /** VDI refs of a VM's disks, in VBD order. */
  vmDisks(vmRef: string): string[] {
    const vm = this.store.get('VM', vmRef)
    const out: string[] = []
    for (const vbdRef of vm.VBDs as string[]) {
      const vbd = this.store.get('VBD', vbdRef)
      if (vbd.type === 'Disk' && vbd.VDI !== NULL_REF) out.push(vbd.VDI as string)
    }
    return out
  }

  /** `VM.snapshot` / `VM.checkpoint`: a snapshot VM whose VDIs freeze the current content. */
  snapshot(vmRef: string, nameLabel: string, ignoreVdis: string[] = [], checkpoint = false): string {
    const s = this.store
    const vm = s.get('VM', vmRef)
    if (vm.is_a_snapshot === true || vm.is_a_template === true) throw new XapiFailure('VM_IS_SNAPSHOT', [vmRef])
    const blocked = vm.blocked_operations as Record<string, XapiValue>
    if (blocked.snapshot !== undefined) throw new XapiFailure('OPERATION_BLOCKED', [vmRef, text(blocked.snapshot)])
    const snapRef = this.newRef()
    const now = new Date()
    s.add('VM', snapRef, {
      ...structuredClone(vm),
      uuid: this.newUuid(),
      name_label: nameLabel,
      power_state: checkpoint ? 'Suspended' : 'Halted',
      is_a_snapshot: true,
      snapshot_of: vmRef,
      snapshots: [],
      snapshot_time: xapiDateTime(now),
      resident_on: NULL_REF,
      VBDs: [],
      VIFs: [],
      tags: [],
      other_config: {},
      current_operations: {},
      allowed_operations: ['destroy', 'clone', 'export'],
    })
    s.update('VM', vmRef, (r) => (r.snapshots as string[]).push(snapRef))
    this.vmDisks(vmRef).forEach((vdiRef, position) => {
      if (ignoreVdis.includes(vdiRef)) return
      const vdi = s.get('VDI', vdiRef)
      const snapVdiRef = this.newRef()
      const content = this.disks.get(vdiRef)
      if (content === undefined) throw new XapiFailure('INTERNAL_ERROR', [`no content for ${vdiRef}`])
      this.disks.set(snapVdiRef, content.copy())
      this.vdiTimes.set(snapVdiRef, this.vdiTimes.get(vdiRef) ?? now.getTime())
      s.add('VDI', snapVdiRef, { ...this.vdiRecord(text(vdi.name_label), true, vdiRef), snapshot_time: xapiDateTime(now), physical_size: this.allocatedBytes(snapVdiRef) })
      s.update('VDI', vdiRef, (r) => (r.snapshots as string[]).push(snapVdiRef))
      this.attach(snapRef, snapVdiRef, position, false)
    })
    for (const vifRef of vm.VIFs as string[]) {
      const vif = s.get('VIF', vifRef)
      const newVif = this.newRef()
      s.add('VIF', newVif, { ...structuredClone(vif), uuid: this.newUuid(), VM: snapRef, currently_attached: false })
      s.update('VM', snapRef, (r) => (r.VIFs as string[]).push(newVif))
    }
    return snapRef
  }

  /** `VM.destroy`: removes the VM and its VBDs/VIFs, not its VDIs (as XAPI does). */
  destroyVm(vmRef: string): void {
    const s = this.store
    const vm = s.get('VM', vmRef)
    if (vm.power_state === 'Running') throw new XapiFailure('VM_BAD_POWER_STATE', [vmRef, 'halted', 'running'])
    for (const vbdRef of vm.VBDs as string[]) {
      const vbd = s.get('VBD', vbdRef)
      const vdiRef = vbd.VDI as string
      if (s.has('VDI', vdiRef)) s.update('VDI', vdiRef, (r) => (r.VBDs = (r.VBDs as string[]).filter((x) => x !== vbdRef)))
      s.remove('VBD', vbdRef)
    }
    for (const vifRef of vm.VIFs as string[]) s.remove('VIF', vifRef)
    const parent = vm.snapshot_of as string
    if (s.has('VM', parent)) s.update('VM', parent, (r) => (r.snapshots = (r.snapshots as string[]).filter((x) => x !== vmRef)))
    s.remove('VM', vmRef)
  }

  /** `VDI.destroy`: refused with VDI_IN_USE while a VBD of a running VM uses it. */
  destroyVdi(vdiRef: string): void {
    const s = this.store
    const vdi = s.get('VDI', vdiRef)
    for (const vbdRef of vdi.VBDs as string[]) {
      const vbd = s.get('VBD', vbdRef)
      if (vbd.currently_attached === true) throw new XapiFailure('VDI_IN_USE', [vdiRef, 'destroy'])
    }
    for (const vbdRef of vdi.VBDs as string[]) {
      const vmRef = s.get('VBD', vbdRef).VM as string
      if (s.has('VM', vmRef)) s.update('VM', vmRef, (r) => (r.VBDs = (r.VBDs as string[]).filter((x) => x !== vbdRef)))
      s.remove('VBD', vbdRef)
    }
    const parent = vdi.snapshot_of as string
    if (s.has('VDI', parent)) s.update('VDI', parent, (r) => (r.snapshots = (r.snapshots as string[]).filter((x) => x !== vdiRef)))
    const srRef = vdi.SR as string
    if (s.has('SR', srRef)) s.update('SR', srRef, (r) => (r.VDIs = (r.VDIs as string[]).filter((x) => x !== vdiRef)))
    s.remove('VDI', vdiRef)
    this.disks.delete(vdiRef)
    this.vdiTimes.delete(vdiRef)
  }

  /** A generation no block has had yet (for writes and imports). */
  nextGeneration(): number {
    return ++this.generation
  }

  /**
   * `VDI.create`: an empty (all zeros) VDI on the pool's SR. The size is rounded up to whole 2 MiB blocks,
   * as XAPI's thin SRs do. Fields XAPI requires are checked with its error codes.
   */
  createVdi(record: unknown): string {
    if (typeof record !== 'object' || record === null || Array.isArray(record)) throw new XapiFailure('FIELD_TYPE_ERROR', ['VDI record'])
    const r = record as Record<string, unknown>
    const sr = r.SR
    if (typeof sr !== 'string' || !this.store.has('SR', sr)) throw new XapiFailure('HANDLE_INVALID', ['SR', String(sr)])
    const size = Number(r.virtual_size)
    if (!Number.isSafeInteger(size) || size <= 0) throw new XapiFailure('FIELD_TYPE_ERROR', ['virtual_size'])
    const sizeBytes = Math.ceil(size / VHD_BLOCK_BYTES) * VHD_BLOCK_BYTES
    const ref = this.newRef()
    this.disks.set(ref, new DiskContent(0x4000_0000 + ++this.createdVdis, sizeBytes, new Map()))
    this.vdiTimes.set(ref, Date.now())
    const base = this.vdiRecord(typeof r.name_label === 'string' ? r.name_label : '', false, NULL_REF)
    const map = (v: unknown): Record<string, XapiValue> => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (structuredClone(v) as Record<string, XapiValue>) : {})
    this.store.add('VDI', ref, {
      ...base,
      name_description: typeof r.name_description === 'string' ? r.name_description : '',
      SR: sr,
      virtual_size: sizeBytes,
      type: typeof r.type === 'string' ? r.type : 'user',
      sharable: r.sharable === true,
      read_only: r.read_only === true,
      other_config: map(r.other_config),
      sm_config: map(r.sm_config),
      xenstore_data: map(r.xenstore_data),
      tags: Array.isArray(r.tags) ? r.tags.map(String) : [],
    })
    this.store.update('SR', sr, (s) => (s.VDIs as string[]).push(ref))
    return ref
  }

  /** Refreshes what the records say about a VDI whose content changed (an import). */
  contentChanged(vdiRef: string): void {
    this.vdiTimes.set(vdiRef, Date.now())
    this.store.update('VDI', vdiRef, (r) => (r.physical_size = this.allocatedBytes(vdiRef)))
  }

  /** Admin: changes `blocks` (or `ratio` of the blocks) of every disk of a VM. */
  writeBlocks(vmRef: string, amount: { blocks?: number; ratio?: number }): { vdiUuid: string; vdiRef: string; blocks: number[] }[] {
    const vm = this.store.get('VM', vmRef)
    if (vm.is_a_snapshot === true) throw new XapiFailure('VM_IS_SNAPSHOT', [vmRef])
    return this.vmDisks(vmRef).map((vdiRef) => {
      const disk = this.disks.get(vdiRef)
      if (disk === undefined) throw new XapiFailure('INTERNAL_ERROR', [`no content for ${vdiRef}`])
      const count = amount.blocks ?? Math.round((amount.ratio ?? 0) * disk.blockCount)
      const blocks = disk.write(count, mix(this.options.seed, disk.lineage, ++this.writeCount, 0x3417e), () => this.nextGeneration())
      this.vdiTimes.set(vdiRef, Date.now())
      this.store.update('VDI', vdiRef, (r) => (r.physical_size = this.allocatedBytes(vdiRef)))
      return { vdiUuid: text(this.store.get('VDI', vdiRef).uuid), vdiRef, blocks }
    })
  }

  listVms(): SimVmInfo[] {
    return this.store
      .all('VM')
      .filter(([, r]) => r.is_a_snapshot !== true && r.is_a_template !== true && r.is_control_domain !== true)
      .map(([ref, r]) => ({
        uuid: text(r.uuid),
        ref,
        nameLabel: text(r.name_label),
        vdis: this.vmDisks(ref).map((vdiRef) => ({
          uuid: text(this.store.get('VDI', vdiRef).uuid),
          ref: vdiRef,
          virtualSizeBytes: this.disks.get(vdiRef)?.virtualSizeBytes ?? 0,
        })),
      }))
  }
}

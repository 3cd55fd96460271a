/**
 * What a whole-VM restore creates, computed from a backup's metadata before anything is touched, with
 * Xen Orchestra's rules (importIncrementalVm + ImportVmBackup):
 * - the VM record: the backed-up VM's fields (name, description, CPUs, memory, platform, HVM/PV boot,
 *   xenstore data, tags, other_config), not a template, no affinity, `start`/`start_on` blocked with
 *   "Importing…" while the import runs, named `[Importing…] <name>`; once complete XO names it
 *   `<name> (<backup timestamp>)`, describes it `Restored on <now> from <remote> - <description>`, adds
 *   the tag `restored from backup` (plus the optional additional tag), restores the record's own blocked
 *   operations, and removes the backup keys of `other_config` (`xo:backup:*`, `xo:copy_of`) on the VM and
 *   its VDIs. `mac_seed` is dropped so XAPI generates a new one.
 * - one VDI per disk (VBD order by userdevice) with the source's name, description, tags, other_config;
 *   each gets the VBDs that used it; VBDs of other types (CD drives) are recreated empty;
 * - VIFs on the network matched as XO does: `$network$uuid` if that network exists in the pool, else a
 *   network with the same name on the same VLAN (`$network$VLAN`, -1 when untagged), else the first of
 *   that VLAN, else the pool default (the last network with a PIF); VIFs keep their MAC unless asked.
 */
import { formatTimestamp, resolveVhdPath, sourceVdiUuid, type BackupMetadata, type XapiRecord } from './layout.js'
import { TAG_CHAIN_LENGTH, TAG_CONTENT_KEY, TAG_COPY_OF, TAG_DATETIME, TAG_EXPORTED, TAG_JOB, TAG_QCOW2_FIX, TAG_SCHEDULE, TAG_VM } from './backup-keys.js'

export const RESTORED_TAG = 'restored from backup'
export const IMPORTING = 'Importing…'
const NULL_REF = 'OpaqueRef:NULL'

/** `other_config` keys XO removes from restored VMs and VDIs (resetVmOtherConfig). */
export const BACKUP_OTHER_CONFIG_KEYS = [
  TAG_CONTENT_KEY,
  TAG_COPY_OF,
  TAG_DATETIME,
  TAG_CHAIN_LENGTH,
  TAG_EXPORTED,
  TAG_QCOW2_FIX,
  TAG_JOB,
  TAG_SCHEDULE,
  TAG_VM,
] as const

export interface DiskPlan {
  /** ref of the VDI in the metadata */
  ref: string
  vhdPath: string
  sourceVdiUuid: string | null
  nameLabel: string
  /** the VDI.create record (SR filled in by the caller) */
  record: Record<string, unknown>
  /** VBDs of this disk (VM/VDI filled in by the caller) */
  vbds: Record<string, unknown>[]
}

export interface VmPlan {
  vmRecord: Record<string, unknown>
  /** name once restored: `<name> (<timestamp>)` unless given */
  finalName: string
  /** the record's own blocked operations, reapplied when complete */
  blockedOperations: Record<string, string>
  tags: string[]
  disks: DiskPlan[]
  /** VBDs without a disk (CD drives), recreated empty */
  emptyVbds: Record<string, unknown>[]
  vifs: XapiRecord[]
}

const str = (v: unknown, d = ''): string => (typeof v === 'string' ? v : d)
const obj = (v: unknown): Record<string, unknown> => (typeof v === 'object' && v !== null && !Array.isArray(v) ? { ...(v as Record<string, unknown>) } : {})
const strMap = (v: unknown): Record<string, string> => Object.fromEntries(Object.entries(obj(v)).filter((e): e is [string, string] => typeof e[1] === 'string'))

export function withoutBackupKeys(otherConfig: unknown): Record<string, string> {
  const out = strMap(otherConfig)
  for (const k of BACKUP_OTHER_CONFIG_KEYS) delete out[k]
  return out
}

/** Fields of a VM record VM.create takes (XO's VM_create), from the backed-up record. */
export const VM_FIELDS = [
  'actions_after_crash', 'actions_after_reboot', 'actions_after_shutdown', 'HVM_boot_params', 'HVM_boot_policy', 'memory_dynamic_max',
  'memory_dynamic_min', 'memory_static_max', 'memory_static_min', 'platform', 'PV_args', 'PV_bootloader_args', 'PV_bootloader', 'PV_kernel',
  'PV_legacy_args', 'PV_ramdisk', 'recommendations', 'user_version', 'VCPUs_at_startup', 'VCPUs_max', 'VCPUs_params', 'domain_type',
  'has_vendor_device', 'name_description', 'order', 'shutdown_delay', 'start_delay', 'xenstore_data', 'HVM_shadow_multiplier', 'NVRAM',
] as const

interface PlanOptions {
  /** the VM's name once restored (default `<name> (<timestamp>)`) */
  nameLabel?: string
  additionalVmTag?: string
}

export function planVmRestore(metadata: BackupMetadata, vmUuid: string, options: PlanOptions = {}): VmPlan {
  const vm = metadata.vm
  const name = str(vm.name_label, 'VM')
  const tags = Array.isArray(vm.tags) ? vm.tags.map(String) : []
  if (options.additionalVmTag !== undefined && !tags.includes(options.additionalVmTag)) tags.push(options.additionalVmTag)
  const blockedOperations = strMap(vm.blocked_operations)
  const otherConfig = withoutBackupKeys(vm.other_config)
  delete otherConfig.mac_seed
  const vmRecord: Record<string, unknown> = {}
  for (const f of VM_FIELDS) if (vm[f] !== undefined) vmRecord[f] = vm[f]
  if (vmRecord.HVM_shadow_multiplier === 1) delete vmRecord.HVM_shadow_multiplier
  Object.assign(vmRecord, {
    name_label: `[${IMPORTING}] ${name}`,
    is_a_template: false,
    affinity: NULL_REF,
    ha_always_run: false,
    other_config: otherConfig,
    tags,
    blocked_operations: { ...blockedOperations, start: IMPORTING, start_on: IMPORTING },
  })
  return {
    vmRecord,
    finalName: options.nameLabel ?? `${name} (${formatTimestamp(metadata.timestamp)})`,
    blockedOperations,
    tags,
    disks: planDisks(metadata, vmUuid),
    emptyVbds: Object.values(metadata.vbds)
      .filter((vbd) => vbd.type !== undefined && vbd.type !== 'Disk')
      .map((vbd) => vbdRecord(vbd, true)),
    vifs: Object.values(metadata.vifs).sort((a, b) => Number(a.device) - Number(b.device)),
  }
}

function vbdRecord(vbd: XapiRecord, empty: boolean): Record<string, unknown> {
  const type = str(vbd.type, 'Disk')
  return {
    userdevice: str(vbd.userdevice),
    bootable: vbd.bootable === true,
    mode: str(vbd.mode, type === 'Disk' ? 'RW' : 'RO'),
    type,
    empty,
    unpluggable: vbd.unpluggable === true,
    other_config: strMap(vbd.other_config),
    qos_algorithm_type: str(vbd.qos_algorithm_type),
    qos_algorithm_params: strMap(vbd.qos_algorithm_params),
  }
}

/** Disks in VBD order (lowest userdevice first), those without a VBD last. */
function planDisks(metadata: BackupMetadata, vmUuid: string): DiskPlan[] {
  const vbdsOf = new Map<string, XapiRecord[]>()
  for (const vbd of Object.values(metadata.vbds)) {
    if (typeof vbd.VDI !== 'string' || (vbd.type !== undefined && vbd.type !== 'Disk')) continue
    vbdsOf.set(vbd.VDI, [...(vbdsOf.get(vbd.VDI) ?? []), vbd])
  }
  const position = (p: DiskPlan): number => Math.min(...p.vbds.map((v) => Number(v.userdevice)), Number.MAX_SAFE_INTEGER)
  return Object.entries(metadata.vhds)
    .map(([ref, rel]): DiskPlan => {
      const vdi = metadata.vdis[ref] ?? {}
      const nameLabel = str(vdi.name_label)
      return {
        ref,
        vhdPath: resolveVhdPath(vmUuid, rel),
        sourceVdiUuid: sourceVdiUuid(metadata, ref) ?? null,
        nameLabel,
        record: {
          name_label: nameLabel,
          name_description: str(vdi.name_description),
          other_config: withoutBackupKeys(vdi.other_config),
          read_only: vdi.read_only === true,
          sharable: vdi.sharable === true,
          tags: Array.isArray(vdi.tags) ? vdi.tags.map(String) : [],
          type: str(vdi.type, 'user'),
          xenstore_data: strMap(vdi.xenstore_data),
        },
        vbds: (vbdsOf.get(ref) ?? []).map((vbd) => vbdRecord(vbd, false)),
      }
    })
    .sort((a, b) => position(a) - position(b))
}

export interface PoolNetwork {
  $ref: string
  uuid: string
  name_label: string
  /** VLAN of the network's first PIF; undefined for a network without PIF (ignored, as XO does) */
  vlan: number | undefined
}

/** The pool network a backed-up VIF goes to (XO's rule), or undefined when the pool has none. */
export function matchNetwork(vif: XapiRecord, networks: readonly PoolNetwork[]): PoolNetwork | undefined {
  const byUuid = networks.find((n) => n.uuid === vif.$network$uuid)
  if (typeof vif.$network$uuid === 'string' && byUuid !== undefined) return byUuid
  const withPif = networks.filter((n) => n.vlan !== undefined)
  const vlan = typeof vif.$network$VLAN === 'number' ? vif.$network$VLAN : -1
  const sameVlan = withPif.filter((n) => n.vlan === vlan)
  if (sameVlan.length > 0) return sameVlan.find((n) => n.name_label === vif.$network$name_label) ?? sameVlan[0]
  return withPif.at(-1)
}

/** The description XO gives a restored VM. */
export function restoredDescription(metadata: BackupMetadata, remoteName: string | undefined, now: Date): string {
  let desc = `Restored on ${formatTimestamp(now)}`
  if (remoteName !== undefined) desc += ` from ${remoteName}`
  const original = str(metadata.vm.name_description)
  if (original !== '') desc += ` - ${original}`
  return desc
}

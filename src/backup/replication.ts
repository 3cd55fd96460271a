/**
 * Replication of a backed-up VM to SRs (XO's `srs` of a backup job): delta mode = continuous replication,
 * full mode = disaster recovery. Each run writes one replica VM per target SR, as XO's replication writers
 * lay them out (one VM per transfer, which XO's listReplicatedVms recognises):
 *
 * - the replica is created halted with `start`/`start_on` blocked ("Importing…"), `other_config` keys
 *   `xo:copy_of` (the source snapshot), `xo:backup:job`, `:schedule`, `:vm`, `:sr` and
 *   `xo:backup:datetime` = 19700101T000000Z (an interrupted copy sorts oldest and goes first in retention);
 * - each disk: for a delta, `VDI.clone` of the replica VDI that copies the base snapshot's VDI (its
 *   `xo:copy_of`), then the XAPI delta export piped into `PUT /import_raw_vdi?format=vhd` onto the clone;
 *   for a full (first run, DR, or no base replica on this SR), `VDI.create` and the full export imported;
 *   VDIs carry `xo:copy_of` and `xo:backup:contentKey` = the source snapshot VDI's uuid;
 * - VBDs in the source order, VIFs on networks matched as a restore does;
 * - complete: XO's name `<vm> - <job> - (<timestamp>)`, tag `Continuous Replication` or `Disaster
 *   Recovery`, start blocked with XO's message, `xo:backup:datetime` the run's datetime on VM and VDIs;
 * - retention: the replicas of this schedule, VM and SR beyond `copyRetention` (newest kept) are destroyed
 *   with their VDIs.
 *
 * Each SR is isolated: a failure there removes what this run created on it, fails its `export` task and
 * leaves the other SRs and the remotes alone. The disk bytes go export → import on this thread, one export
 * per SR (XO forks one export to every writer; here each SR reads its own).
 */
import { BackupProxyError, XapiError, serializeError, toError } from '../common/errors.js'
import type { XapiClient } from '../xapi/client.js'
import { openVdiExport, type VdiExportDescriptor } from '../xapi/export.js'
import type { BackupSnapshot } from './base-choice.js'
import { TAG_CONTENT_KEY, TAG_COPY_OF, TAG_DATETIME, TAG_JOB, TAG_QCOW2_FIX, TAG_SCHEDULE, TAG_SR, TAG_VM, tagOf } from './backup-keys.js'
import { poolNetworks } from './import-vm-backup.js'
import type { BackupXapi, XapiDisk, XapiObject } from './ports.js'
import { putVdiImport } from '../xapi/restore-import.js'
import { IMPORTING, VM_FIELDS, matchNetwork, withoutBackupKeys } from './restore-vm-plan.js'
import type { Task } from './task-log.js'
import { xapiDateTime } from './xo-records.js'

export const START_BLOCKED = 'Start operation for this vm is blocked, clone it if you want to use it.'
export const CR_TAG = 'Continuous Replication'
export const DR_TAG = 'Disaster Recovery'
/** `xo:backup:datetime` of a replica whose transfer has not completed (XO's formatFilenameDate(0)) */
const INCOMPLETE_DATETIME = '19700101T000000Z'

/** One target SR of a run, on the pool that holds it. */
export interface SrTarget {
  /** the SR's uuid (XO's writer id) */
  id: string
  client: XapiClient
  /** replicas kept on this SR (XO's copyRetention, the SR's own setting over the VM's); > 0 */
  copyRetention: number
}

interface ReplicaIds {
  jobId: string
  jobName: string
  scheduleId: string
  vmUuid: string
}

type Vm = ReturnType<XapiClient['listVms']>[number]

/** XO's listReplicatedVms (old style: one VM per transfer, start blocked), oldest first. */
export function listReplicas(client: XapiClient, ids: Pick<ReplicaIds, 'scheduleId' | 'vmUuid'>, srUuid: string): Vm[] {
  return client
    .listVms()
    .filter((vm) => {
      const tag = (key: string): string | undefined => tagOf(vm, key)
      return (tag(TAG_JOB) === ids.scheduleId || tag(TAG_SCHEDULE) === ids.scheduleId) && tag(TAG_SR) === srUuid && tag(TAG_VM) === ids.vmUuid && 'start' in (vm.blocked_operations ?? {})
    })
    .sort((a, b) => ((tagOf(a, TAG_DATETIME) ?? '') < (tagOf(b, TAG_DATETIME) ?? '') ? -1 : 1))
}

const complete = (vm: Vm): boolean => (tagOf(vm, TAG_DATETIME) ?? INCOMPLETE_DATETIME) !== INCOMPLETE_DATETIME

/** Uuids of the source snapshots this SR holds a complete replica of (what a delta can chain onto). */
export function replicatedSnapshots(target: SrTarget, ids: ReplicaIds): Set<string> {
  return new Set(listReplicas(target.client, ids, target.id).filter(complete).map((vm) => tagOf(vm, TAG_COPY_OF)).filter((u): u is string => u !== undefined))
}

/** Destroys a VM (shut down first if running) and its disks, as XO's VM_destroy does. */
async function destroyVmAndDisks(client: XapiClient, vmRef: string): Promise<void> {
  const vdis = client.vmDisks(vmRef).map((d) => d.vdi.$ref)
  const state = await client.call('VM.get_power_state', vmRef).catch(() => 'Halted')
  if (state === 'Running') await client.callAsync('VM.hard_shutdown', vmRef)
  await client.callAsync('VM.destroy', vmRef)
  for (const ref of vdis) await client.destroyVdi(ref)
}

interface ReplicateInput {
  ids: ReplicaIds
  mode: 'delta' | 'full'
  source: BackupXapi
  /** the source VM (its record names the replica) and the run's snapshot of it */
  vm: XapiObject
  snapshot: XapiObject
  /** the base snapshot of a delta run (undefined: full) */
  base: BackupSnapshot | undefined
  timestamp: string
  timestampMs: number
  signal: AbortSignal
}

interface ReplicationResult {
  succeeded: string[]
  failed: string[]
  sizeBytes: number
}

/** Replicates to every SR target at once; one SR's failure is reported in its task, not thrown. */
async function replicateToSrs(targets: readonly SrTarget[], input: ReplicateInput, task: Task): Promise<ReplicationResult> {
  const out: ReplicationResult = { succeeded: [], failed: [], sizeBytes: 0 }
  await Promise.all(targets.map(async (t) => {
    const sr = t.client.listSrs().find((s) => s.uuid === t.id)
    const exportTask = task.child('export', { type: 'SR', id: t.id, isFull: input.base === undefined, ...(sr === undefined ? {} : { name_label: sr.name_label }) })
    try {
      if (sr === undefined) throw new BackupProxyError('E_BACKUP', `SR ${t.id} is not in the pool at ${t.client.url}: check the job's SRs`)
      const transfer = exportTask.child('transfer')
      const done = await transfer.run(() => replicateToSr(t, sr.$ref, input, exportTask), (r) => ({ size: r.size }))
      // retention counts the new replica: wait until this connection's cache shows it complete
      const datetime = xapiDateTime(input.timestampMs)
      await t.client.waitObject('VM', done.vmRef, { predicate: (vm) => tagOf(vm, TAG_DATETIME) === datetime && tagOf(vm, TAG_SR) !== undefined, signal: input.signal })
      await applyCopyRetention(t, input, exportTask)
      const size = done.size
      exportTask.end('success')
      out.succeeded.push(t.id)
      out.sizeBytes += size
    } catch (error) {
      if (input.signal.aborted) exportTask.fail(toError(input.signal.reason))
      else exportTask.fail(error)
      out.failed.push(t.id)
    }
  }))
  out.succeeded.sort()
  out.failed.sort()
  return out
}

/** Keeps the newest `copyRetention` replicas of this schedule/VM on the SR; destroys the others. */
async function applyCopyRetention(t: SrTarget, input: Pick<ReplicateInput, 'ids'>, task: Task): Promise<void> {
  const replicas = listReplicas(t.client, input.ids, t.id)
  const old = replicas.slice(0, Math.max(0, replicas.length - Math.max(1, t.copyRetention)))
  for (const vm of old) {
    try {
      await destroyVmAndDisks(t.client, vm.$ref)
      task.info(`replica ${vm.uuid} removed (copyRetention ${t.copyRetention})`)
    } catch (error) {
      task.warning(`could not remove the old replica ${vm.uuid}: remove it by hand`, { error: serializeError(error).message })
    }
  }
}

/** The replica VDI a delta of `disk` chains onto: the copy of the base snapshot's VDI of the same disk. */
function baseReplicaVdis(t: SrTarget, input: ReplicateInput, baseDisks: readonly XapiDisk[]): Map<string, { ref: string; baseSnapshotVdiRef: string }> {
  const out = new Map<string, { ref: string; baseSnapshotVdiRef: string }>()
  if (input.base === undefined) return out
  const replica = listReplicas(t.client, input.ids, t.id).filter(complete).reverse().find((vm) => tagOf(vm, TAG_COPY_OF) === input.base?.uuid)
  if (replica === undefined) return out
  const replicaDisks = t.client.vmDisks(replica.$ref)
  for (const d of baseDisks) {
    const copy = replicaDisks.find((r) => tagOf(r.vdi, TAG_COPY_OF) === d.vdi.uuid)
    if (copy !== undefined) out.set(d.sourceVdiUuid, { ref: copy.vdi.$ref, baseSnapshotVdiRef: d.vdi.ref })
  }
  return out
}

const asRef = (v: unknown, what: string): string => {
  if (typeof v !== 'string' || !v.startsWith('OpaqueRef:')) throw new XapiError(`${what} returned ${JSON.stringify(v)} instead of a ref`)
  return v
}

/** One SR's replica; returns the bytes imported. On failure removes what it created, then throws. */
async function replicateToSr(t: SrTarget, srRef: string, input: ReplicateInput, task: Task): Promise<{ vmRef: string; size: number }> {
  const { client } = t
  const { ids, vm, snapshot, signal } = input
  const disks = await input.source.listDisks(snapshot.ref)
  const baseDisks = input.base === undefined ? [] : await input.source.listDisks(input.base.ref)
  const bases = baseReplicaVdis(t, input, baseDisks)
  const keys = { [TAG_JOB]: ids.jobId, [TAG_SCHEDULE]: ids.scheduleId, [TAG_VM]: ids.vmUuid, [TAG_SR]: t.id }
  const created: { vm?: string; vdis: string[] } = { vdis: [] }
  try {
    signal.throwIfAborted()
    const record: Record<string, unknown> = {}
    for (const f of VM_FIELDS) if (vm.record[f] !== undefined) record[f] = vm.record[f]
    const otherConfig = withoutBackupKeys(vm.record.other_config)
    delete otherConfig.mac_seed
    const name = typeof vm.record.name_label === 'string' ? vm.record.name_label : ids.vmUuid
    const tags = Array.isArray(vm.record.tags) ? vm.record.tags.map(String) : []
    const vmRef = asRef(await client.call('VM.create', {
      ...record,
      name_label: `[${IMPORTING}] ${name}`,
      is_a_template: false,
      affinity: 'OpaqueRef:NULL',
      ha_always_run: false,
      tags,
      other_config: { ...otherConfig, ...keys, [TAG_COPY_OF]: snapshot.uuid, [TAG_DATETIME]: INCOMPLETE_DATETIME },
      blocked_operations: { start: IMPORTING, start_on: IMPORTING },
    }), 'VM.create')
    created.vm = vmRef
    let size = 0
    for (const disk of disks) {
      signal.throwIfAborted()
      const base = bases.get(disk.sourceVdiUuid)
      const vdiKeys = { ...keys, [TAG_COPY_OF]: disk.vdi.uuid, [TAG_CONTENT_KEY]: disk.vdi.uuid, [TAG_DATETIME]: INCOMPLETE_DATETIME }
      const vdiRef = base === undefined
        ? asRef(await client.call('VDI.create', { ...vdiRecordOf(disk), SR: srRef, other_config: { ...withoutBackupKeys(disk.vdi.record.other_config), ...vdiKeys } }), 'VDI.create')
        : asRef(await client.callAsync('VDI.clone', base.ref, {}), 'VDI.clone')
      created.vdis.push(vdiRef)
      if (base !== undefined) await client.call('VDI.set_other_config', vdiRef, { ...withoutBackupKeys(disk.vdi.record.other_config), ...vdiKeys })
      await client.call('VBD.create', { ...vbdRecordOf(disk.vbd), VM: vmRef, VDI: vdiRef })
      const n = await copyDisk(client, input, disk, vdiRef, base?.baseSnapshotVdiRef)
      size += n
      task.info(`disk ${disk.sourceVdiUuid} replicated`, { sizeBytes: n, delta: base !== undefined })
    }
    await createVifs(client, input, vmRef)
    await finalize(client, input, vmRef, created.vdis)
    return { vmRef, size }
  } catch (error) {
    if (created.vm !== undefined) await client.callAsync('VM.destroy', created.vm).catch((e: unknown) => task.warning(`could not remove the incomplete replica VM ${created.vm}: remove it by hand`, { error: serializeError(e).message }))
    for (const ref of created.vdis.reverse()) await client.destroyVdi(ref).catch((e: unknown) => task.warning(`could not remove the incomplete replica VDI ${ref}: remove it by hand`, { error: serializeError(e).message }))
    throw error
  }
}

function vdiRecordOf(disk: XapiDisk): Record<string, unknown> {
  const r = disk.vdi.record
  return {
    name_label: `[Importing] ${typeof r.name_label === 'string' ? r.name_label : ''}`,
    name_description: typeof r.name_description === 'string' ? r.name_description : '',
    virtual_size: Number(r.virtual_size),
    type: typeof r.type === 'string' ? r.type : 'user',
    sharable: r.sharable === true,
    read_only: r.read_only === true,
    tags: Array.isArray(r.tags) ? r.tags.map(String) : [],
    xenstore_data: r.xenstore_data ?? {},
    sm_config: {},
  }
}

function vbdRecordOf(vbd: XapiObject): Record<string, unknown> {
  const r = vbd.record
  return {
    userdevice: typeof r.userdevice === 'string' ? r.userdevice : String(Number(r.userdevice ?? 0)),
    bootable: r.bootable === true,
    mode: typeof r.mode === 'string' ? r.mode : 'RW',
    type: 'Disk',
    empty: false,
    unpluggable: r.unpluggable === true,
    other_config: r.other_config ?? {},
    qos_algorithm_type: typeof r.qos_algorithm_type === 'string' ? r.qos_algorithm_type : '',
    qos_algorithm_params: r.qos_algorithm_params ?? {},
  }
}

/** The snapshot VDI's export (a delta against `baseRef`) piped into an import onto `vdiRef`. */
async function copyDisk(client: XapiClient, input: ReplicateInput, disk: XapiDisk, vdiRef: string, baseRef: string | undefined): Promise<number> {
  const { signal } = input
  const exportDescriptor = (await input.source.exportDescriptor(disk.vdi.ref, baseRef === undefined ? {} : { baseRef })) as unknown as VdiExportDescriptor
  const exp = await openVdiExport({ ...exportDescriptor, signal })
  const descriptor = await client.importDescriptor(vdiRef, 'vhd')
  const settled = client.waitTask(descriptor.taskRef)
  settled.catch(() => undefined) // awaited after the upload
  let sent = 0
  exp.stream.on('data', (c: Buffer) => (sent += c.length))
  try {
    await putVdiImport(descriptor, exp.stream, { signal, ...(exp.sizeBytes === undefined ? {} : { sizeBytes: exp.sizeBytes }) })
    await settled
  } catch (error) {
    exp.stream.destroy()
    await client.cancelTask(descriptor.taskRef).catch(() => undefined)
    throw error
  }
  const name = disk.vdi.record.name_label
  await client.call('VDI.set_name_label', vdiRef, typeof name === 'string' ? name : '')
  return sent
}

async function createVifs(client: XapiClient, input: ReplicateInput, vmRef: string): Promise<void> {
  const vifs = await input.source.listVifs(input.vm.ref)
  if (vifs.length === 0) return
  const networks = await poolNetworks(client)
  for (const { record: vif } of vifs.sort((a, b) => Number(a.record.device) - Number(b.record.device))) {
    const network = matchNetwork(vif, networks)
    if (network === undefined) continue
    await client.call('VIF.create', {
      device: String(vif.device),
      network: network.$ref,
      VM: vmRef,
      MAC: typeof vif.MAC === 'string' ? vif.MAC : '',
      MTU: typeof vif.MTU === 'number' ? vif.MTU : 1500,
      other_config: vif.other_config ?? {},
      qos_algorithm_type: typeof vif.qos_algorithm_type === 'string' ? vif.qos_algorithm_type : '',
      qos_algorithm_params: vif.qos_algorithm_params ?? {},
    })
  }
}

/** XO's last steps: name, tag, description, start blocked, the run's datetime on the VM and its VDIs. */
async function finalize(client: XapiClient, input: ReplicateInput, vmRef: string, vdiRefs: readonly string[]): Promise<void> {
  const { vm, ids, timestamp } = input
  const name = typeof vm.record.name_label === 'string' ? vm.record.name_label : ids.vmUuid
  await client.call('VM.set_name_label', vmRef, `${name} - ${ids.jobName} - (${timestamp})`)
  const description = typeof vm.record.name_description === 'string' ? vm.record.name_description : ''
  await client.call('VM.set_name_description', vmRef, `${description} -- last replication: ${timestamp}`)
  await client.call('VM.add_tags', vmRef, input.mode === 'full' ? DR_TAG : CR_TAG)
  await client.call('VM.set_blocked_operations', vmRef, { start: START_BLOCKED, start_on: START_BLOCKED })
  const done: Record<string, string> = { [TAG_DATETIME]: xapiDateTime(input.timestampMs), [TAG_QCOW2_FIX]: 'true' }
  await client.setOtherConfig('VM', vmRef, done)
  for (const ref of vdiRefs) await client.setOtherConfig('VDI', ref, done)
}

/** What a VM's backup reports per target (VmBackupResult without its duration). */
interface TargetsOutcome {
  vmUuid: string
  timestamp: string
  full: boolean
  sizeBytes: number
  readBytes: number
  succeeded: string[]
  failed: string[]
}

/**
 * The remotes' part (`toRemotes`, undefined when the job has none) then the SRs' part of one VM's backup,
 * isolated from each other: the remotes failing entirely does not stop the SRs; the VM fails only when
 * every target failed (or on cancel).
 */
export async function toRemotesAndSrs(
  toRemotes: (() => Promise<TargetsOutcome>) | undefined, remoteIds: readonly string[], srTargets: readonly SrTarget[], input: ReplicateInput, task: Task,
): Promise<TargetsOutcome> {
  let remote: TargetsOutcome | undefined
  let remoteError: unknown
  if (toRemotes !== undefined) {
    try {
      remote = await toRemotes()
    } catch (error) {
      if (input.signal.aborted || srTargets.length === 0) throw error
      remoteError = error
    }
  }
  if (srTargets.length === 0) {
    if (remote === undefined) throw new BackupProxyError('E_BACKUP', `VM ${input.ids.vmUuid}: the job has no target (no remote, no SR with a copyRetention above 0)`)
    return remote
  }
  const repl = await replicateToSrs(srTargets, input, task)
  input.signal.throwIfAborted()
  const succeeded = [...(remote?.succeeded ?? []), ...repl.succeeded].sort()
  const failed = [...(remote?.failed ?? (remoteError === undefined ? [] : remoteIds)), ...repl.failed].sort()
  if (succeeded.length === 0) {
    const why = remoteError === undefined ? '' : ` (remotes: ${toError(remoteError).message})`
    throw new BackupProxyError('E_BACKUP', `VM ${input.ids.vmUuid}: every target failed${why}; see each export task for why`)
  }
  return {
    vmUuid: input.ids.vmUuid,
    timestamp: input.timestamp,
    full: input.base === undefined,
    sizeBytes: (remote?.sizeBytes ?? 0) + repl.sizeBytes,
    readBytes: (remote?.readBytes ?? 0) + repl.sizeBytes,
    succeeded,
    failed,
  }
}

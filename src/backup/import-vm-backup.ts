/**
 * Whole-VM restore of one backup into a pool (XO's `backup.importVmBackup`): `importVmBackup()` is the
 * entry point the queue task (`backup.restore`), the CLI and an API method call.
 *
 * Order, as XO's importIncrementalVm: every chain is opened first (a broken backup fails before anything
 * is created); `VM.create` from the metadata's VM record (restore-vm-plan.ts: start blocked while
 * importing); per disk `VDI.create` on the SR and its VBDs in their original order (CD drives empty);
 * the disks' contents (flattened chains, one `PUT /import_raw_vdi` each under an XAPI task) through the
 * `importer` — the stream pool in a proxy; the VIFs on the matched networks; then the final name,
 * description, `restored from backup` tag and the record's own blocked operations; `VM.start` if asked.
 *
 * Failure or cancel (the signal) removes what was created — the VM (shut down first if it started) and
 * every VDI — before the error is reported. An SR that fills up is reported as an XapiError naming the
 * SR with XAPI's code (`SR_BACKEND_FAILURE_44`), not retryable.
 */
import { BackupProxyError, CancelledError, XapiError, serializeError, type JsonValue } from '../common/errors.js'
import type { JobProgress } from '../queue/client.js'
import type { Remote } from '../remotes/remote.js'
import type { RemoteOptions } from '../remotes/url-types.js'
import { openChain, type VhdChain } from '../vhd/chain.js'
import { FOOTER_SIZE, HEADER_SIZE, batSizeBytes, bitmapSizeBytes } from '../vhd/constants.js'
import type { XapiClient } from '../xapi/client.js'
import type { DiskImporter } from './disk-import.js'
import { parseMetadata, timestampOfName, type BackupMetadata } from './layout.js'
import { importXvaBackup } from './import-xva-backup.js'
import type { XvaImporter } from './xva-import.js'
import { RESTORED_TAG, matchNetwork, planVmRestore, restoredDescription, type DiskPlan, type PoolNetwork, type VmPlan } from './restore-vm-plan.js'

/** The task-log node a restore reports under (the queue's LogTask and the run's Task both fit). */
export interface RestoreLog {
  child(message: string, data?: JsonValue): RestoreLog
  info(message: string, data?: JsonValue): void
  warning(message: string, data?: JsonValue): void
  end(status: 'success' | 'failure' | 'interrupted', result?: JsonValue): void
}

export interface ImportVmBackupOptions {
  /** the backup's remote, open (metadata and chain headers are read on this thread) */
  remote: Remote
  /** the same remote for the importer's thread (URL with credentials: never logged) */
  remoteSpec: { url: string; options: RemoteOptions }
  /** shown in the restored VM's description (`from <name>`) */
  remoteName?: string
  /** `xo-vm-backups/<vm>/<ts>.json` */
  metadataPath: string
  xapi: XapiClient
  srUuid: string
  /**
   * XO's `mapVdisSrs`: per disk (the backup's VDI uuid, or the uuid of the disk it is a snapshot of) the
   * SR it goes to instead of `srUuid`; `null` leaves that disk out (its VBDs too)
   */
  mapVdisSrs?: Readonly<Record<string, string | null>>
  start?: boolean
  /** the restored VM's name (default XO's `<name> (<timestamp>)`) */
  nameLabel?: string
  /** VIFs get new MACs (default: the backed-up MACs) */
  newMacAddresses?: boolean
  additionalVmTag?: string
  importer: DiskImporter
  /** a full backup's XVA upload (default: on this thread; a proxy passes the stream pool's `backup.restoreXva`) */
  xvaImporter?: XvaImporter
  signal: AbortSignal
  /** task-log parent: one `transfer` child (XO's, result `{ size, id }`), one child of it per disk */
  log?: RestoreLog
  onProgress?: (p: JobProgress) => void
}

interface RestoredVdi {
  uuid: string
  nameLabel: string
  sourceVdiUuid: string | null
  /** position of the disk (its first VBD's userdevice) */
  userdevice: string | null
  virtualSizeBytes: number
  /** bytes of VHD uploaded */
  sizeBytes: number
}

export interface ImportVmBackupResult {
  metadataPath: string
  timestamp: string
  /** the backed-up VM */
  vmUuid: string
  /** the restored VM */
  restoredVmUuid: string
  srUuid: string
  started: boolean
  sizeBytes: number
  vdis: RestoredVdi[]
  vifs: { device: string; networkUuid: string; MAC: string }[]
}

/** Exact byte size of `chain.vhdStream()`: footer, header, BAT, present blocks (bitmap + data), footer. */
function flattenedSizeBytes(chain: VhdChain): number {
  const { header } = chain.flattenedHead()
  const blocks = chain.blockIndexes().length
  return FOOTER_SIZE + HEADER_SIZE + batSizeBytes(header.maxTableEntries) + blocks * (bitmapSizeBytes(chain.blockSizeBytes) + chain.blockSizeBytes) + FOOTER_SIZE
}

/** VM uuid of a backup: the metadata's VM record, else the directory of the metadata file. */
function vmUuidOf(metadata: BackupMetadata, metadataPath: string): string {
  if (typeof metadata.vm.uuid === 'string') return metadata.vm.uuid
  const dir = metadataPath.split('/')[1]
  if (dir === undefined) throw new BackupProxyError('E_BACKUP', `backup metadata ${metadataPath}: no VM uuid (no vm.uuid, not under xo-vm-backups/<vm>/)`)
  return dir
}

interface Prepared {
  metadata: BackupMetadata
  timestamp: string
  vmUuid: string
  plan: VmPlan
  sizes: number[]
  virtualSizes: number[]
}

async function prepare(o: ImportVmBackupOptions): Promise<Prepared> {
  const metadata = parseMetadata(o.metadataPath, (await o.remote.readFile(o.metadataPath)).toString('utf8'))
  const timestamp = timestampOfName(o.metadataPath.split('/').pop() ?? '') ?? String(metadata.timestamp)
  const vmUuid = vmUuidOf(metadata, o.metadataPath)
  const plan = planVmRestore(metadata, vmUuid, { ...(o.nameLabel === undefined ? {} : { nameLabel: o.nameLabel }), ...(o.additionalVmTag === undefined ? {} : { additionalVmTag: o.additionalVmTag }) })
  plan.disks = plan.disks.filter((d) => mappedSr(o, metadata, d) !== null)
  if (plan.disks.length === 0) throw new BackupProxyError('E_BACKUP', `backup ${o.metadataPath} has no disk to restore`, { fields: { retryable: false } })
  const sizes: number[] = []
  const virtualSizes: number[] = []
  for (const d of plan.disks) {
    const chain = await openChain(o.remote, d.vhdPath, { signal: o.signal })
    sizes.push(flattenedSizeBytes(chain))
    virtualSizes.push(chain.virtualSizeBytes)
  }
  return { metadata, timestamp, vmUuid, plan, sizes, virtualSizes }
}

/** The SR uuid `mapVdisSrs` gives a disk (by the backup's VDI uuid, then its source's), null to leave it out, else undefined. */
function mappedSr(o: Pick<ImportVmBackupOptions, 'mapVdisSrs'>, metadata: BackupMetadata, d: DiskPlan): string | null | undefined {
  const map = o.mapVdisSrs ?? {}
  const uuid = metadata.vdis[d.ref]?.uuid
  for (const key of [typeof uuid === 'string' ? uuid : undefined, d.sourceVdiUuid ?? undefined]) {
    if (key !== undefined && Object.hasOwn(map, key)) return map[key]
  }
  return undefined
}

type PoolSr = ReturnType<XapiClient['listSrs']>[number]

function findSr(xapi: XapiClient, uuid: string): PoolSr {
  const srs = xapi.listSrs()
  const sr = srs.find((s) => s.uuid === uuid)
  if (sr === undefined) {
    throw new BackupProxyError('E_BACKUP', `SR ${uuid} is not in the pool at ${xapi.url}; its SRs are: ${srs.map((s) => `${s.uuid} (${s.name_label})`).join(', ')}`, {
      fields: { retryable: false, srUuid: uuid },
    })
  }
  return sr
}

/** Networks of the pool with the VLAN of their first PIF (XO ignores networks without PIF). */
export async function poolNetworks(xapi: XapiClient): Promise<PoolNetwork[]> {
  const networks = (await xapi.call('network.get_all_records')) as Record<string, { uuid: string; name_label: string; PIFs: string[] }>
  const pifs = (await xapi.call('PIF.get_all_records')) as Record<string, { VLAN: number }>
  return Object.entries(networks).map(([ref, n]) => {
    const pif = n.PIFs[0] === undefined ? undefined : pifs[n.PIFs[0]]
    return { $ref: ref, uuid: n.uuid, name_label: n.name_label, vlan: pif === undefined ? undefined : Number(pif.VLAN) }
  })
}

function asRef(v: unknown, what: string): string {
  if (typeof v !== 'string' || !v.startsWith('OpaqueRef:')) throw new XapiError(`${what} returned ${JSON.stringify(v)} instead of a ref`)
  return v
}

/** What a restore created, removed in reverse on failure. */
class Created {
  vmRef: string | undefined
  readonly vdis: string[] = []

  async remove(xapi: XapiClient, log: RestoreLog | undefined): Promise<void> {
    const warn = (what: string) => (e: unknown) => log?.warning(`could not remove the incomplete ${what}: remove it by hand`, { error: serializeError(e).message })
    if (this.vmRef !== undefined) {
      const ref = this.vmRef
      const state = await xapi.call('VM.get_power_state', ref).catch(() => 'Halted')
      if (state === 'Running') await xapi.callAsync('VM.hard_shutdown', ref).catch(warn(`VM ${ref} (shutdown)`))
      await xapi.callAsync('VM.destroy', ref).catch(warn(`VM ${ref}`))
    }
    for (const ref of [...this.vdis].reverse()) await xapi.destroyVdi(ref).catch(warn(`VDI ${ref}`))
  }
}

/** Restores the backup at `metadataPath` as a new VM on the SR `srUuid` (a full backup: its XVA, import-xva-backup.ts). */
export async function importVmBackup(o: ImportVmBackupOptions): Promise<ImportVmBackupResult> {
  const metadata = parseMetadata(o.metadataPath, (await o.remote.readFile(o.metadataPath)).toString('utf8'))
  if (metadata.mode === 'full' && typeof metadata.xva === 'string') {
    const sr = findSr(o.xapi, o.srUuid)
    const timestamp = timestampOfName(o.metadataPath.split('/').pop() ?? '') ?? String(metadata.timestamp)
    return importXvaBackup(o, metadata, sr.$ref, { timestamp, vmUuid: vmUuidOf(metadata, o.metadataPath), srUuid: sr.uuid })
  }
  const p = await prepare(o)
  const { xapi, signal } = o
  const sr = findSr(xapi, o.srUuid)
  // each disk's SR: its mapVdisSrs entry, else srUuid (all checked before anything is created)
  const srs = p.plan.disks.map((d) => findSr(xapi, mappedSr(o, p.metadata, d) ?? o.srUuid))
  const created = new Created()
  // XO's task shape: one `transfer` task (its result `{ size, id }`, what XO's restore log shows) over the disks
  const transfer = o.log?.child('transfer')
  try {
    signal.throwIfAborted()
    const vmRef = asRef(await xapi.call('VM.create', p.plan.vmRecord), 'VM.create')
    created.vmRef = vmRef
    const vdiRefs = await createDisks(o, p, srs.map((s) => s.$ref), vmRef, created)
    for (const vbd of p.plan.emptyVbds) await xapi.call('VBD.create', { ...vbd, VM: vmRef, VDI: 'OpaqueRef:NULL' })
    const vdis = await importDisks(transfer === undefined ? o : { ...o, log: transfer }, p, vdiRefs, srs.map((s) => ({ uuid: s.uuid, name: s.name_label })))
    const vifs = await createVifs(o, p.plan, vmRef)
    await finalize(o, p, vmRef)
    if (o.start === true) {
      await xapi.callAsync('VM.start', vmRef, false, false)
      await xapi.waitObject('VM', vmRef, { predicate: (vm) => vm.power_state === 'Running', signal })
    }
    const vm = await xapi.waitObject('VM', vmRef, { signal })
    const sizeBytes = vdis.reduce((a, v) => a + v.sizeBytes, 0)
    transfer?.end('success', { size: sizeBytes, id: vm.uuid })
    return { metadataPath: o.metadataPath, timestamp: p.timestamp, vmUuid: p.vmUuid, restoredVmUuid: vm.uuid, srUuid: sr.uuid, started: o.start === true, sizeBytes, vdis, vifs }
  } catch (error) {
    transfer?.end(signal.aborted ? 'interrupted' : 'failure', serializeError(error) as unknown as JsonValue)
    await created.remove(xapi, o.log)
    if (signal.aborted && !(error instanceof CancelledError)) throw new CancelledError('the restore was cancelled; the VM and VDIs it created were removed', { cause: error })
    throw error
  }
}

/** VDI.create per disk on the SR (named `[Importing] <name>` until filled) and its VBDs; VDI refs in plan order. */
async function createDisks(o: ImportVmBackupOptions, p: Prepared, srRefs: readonly string[], vmRef: string, created: Created): Promise<string[]> {
  const refs: string[] = []
  for (const [i, d] of p.plan.disks.entries()) {
    o.signal.throwIfAborted()
    const ref = asRef(
      await o.xapi.call('VDI.create', { ...d.record, name_label: `[Importing] ${d.nameLabel}`, SR: srRefs[i], virtual_size: p.virtualSizes[i], sm_config: {} }),
      'VDI.create',
    )
    created.vdis.push(ref)
    refs.push(ref)
    for (const vbd of d.vbds) await o.xapi.call('VBD.create', { ...vbd, VM: vmRef, VDI: ref })
  }
  return refs
}

async function importDisks(o: ImportVmBackupOptions, p: Prepared, vdiRefs: string[], srs: readonly { uuid: string; name: string }[]): Promise<RestoredVdi[]> {
  const totalBytes = p.sizes.reduce((a, b) => a + b, 0)
  let doneBytes = 0
  const out: RestoredVdi[] = []
  for (const [i, d] of p.plan.disks.entries()) {
    o.signal.throwIfAborted()
    const vdiRef = vdiRefs[i]!
    const log = o.log?.child(`restore disk ${d.nameLabel || d.ref}`, { type: 'VDI', id: d.sourceVdiUuid ?? d.ref })
    try {
      const descriptor = await o.xapi.importDescriptor(vdiRef, 'vhd')
      const onAbort = (): void => void o.xapi.cancelTask(descriptor.taskRef).catch(() => undefined)
      o.signal.addEventListener('abort', onAbort, { once: true })
      const settled = o.xapi.waitTask(descriptor.taskRef)
      settled.catch(() => undefined) // awaited after the upload
      try {
        const onProgress = (n: number): void => o.onProgress?.({ percent: Math.floor((100 * (doneBytes + n)) / Math.max(1, totalBytes)), doneBytes: doneBytes + n, totalBytes })
        await o.importer({ remote: o.remoteSpec, vhdPath: d.vhdPath, descriptor, sizeBytes: p.sizes[i]! }, { signal: o.signal, onProgress: (pr) => onProgress(pr.sentBytes) })
        await settled
      } catch (error) {
        await o.xapi.cancelTask(descriptor.taskRef).catch(() => undefined)
        throw srFull(await uploadCause(error, settled), srs[i]!)
      } finally {
        o.signal.removeEventListener('abort', onAbort)
      }
      doneBytes += p.sizes[i]!
      await o.xapi.call('VDI.set_name_label', vdiRef, d.nameLabel)
      const vdi = await o.xapi.waitObject('VDI', vdiRef, { signal: o.signal })
      const vbd = d.vbds[0]
      out.push({ uuid: vdi.uuid, nameLabel: d.nameLabel, sourceVdiUuid: d.sourceVdiUuid, userdevice: vbd === undefined ? null : String(vbd.userdevice), virtualSizeBytes: p.virtualSizes[i]!, sizeBytes: p.sizes[i]! })
      log?.end('success', { size: p.sizes[i]!, vdiUuid: vdi.uuid })
    } catch (error) {
      log?.end(o.signal.aborted ? 'interrupted' : 'failure', serializeError(error) as unknown as JsonValue)
      throw error
    }
  }
  return out
}

/** XAPI's "insufficient space" becomes an error that names the SR and says what to do. */
/**
 * When the upload broke (EPIPE, reset: XAPI may close the connection as soon as the import fails, before
 * its HTTP answer is read), the XAPI task carries the real cause (e.g. the SR is full): prefer it. The
 * task was cancelled just before, so `settled` has ended either way.
 */
async function uploadCause(error: unknown, settled: Promise<unknown>): Promise<unknown> {
  const broke = error instanceof XapiError && typeof error.fields?.networkCode === 'string' && error.fields.networkCode !== ''
  if (!broke) return error
  const taskError = await settled.then(
    () => undefined,
    (e: unknown) => e,
  )
  return taskError instanceof XapiError && taskError.xapiCode !== undefined && !/CANCEL/.test(taskError.xapiCode) ? taskError : error
}

function srFull(error: unknown, sr: { uuid: string; name: string }): unknown {
  if (!(error instanceof XapiError) || error.xapiCode !== 'SR_BACKEND_FAILURE_44') return error
  return new XapiError(`SR ${sr.uuid} (${sr.name}) is full: free space on it or restore to another SR; the VM and disks created by this restore were removed`, {
    cause: error,
    fields: { ...error.fields, srUuid: sr.uuid, retryable: false },
  })
}

async function createVifs(o: ImportVmBackupOptions, plan: VmPlan, vmRef: string): Promise<ImportVmBackupResult['vifs']> {
  if (plan.vifs.length === 0) return []
  const networks = await poolNetworks(o.xapi)
  const out: ImportVmBackupResult['vifs'] = []
  for (const vif of plan.vifs) {
    const network = matchNetwork(vif, networks)
    if (network === undefined) {
      o.log?.warning(`VIF ${String(vif.device)} not restored: the pool has no network with a PIF`)
      continue
    }
    const MAC = o.newMacAddresses === true || typeof vif.MAC !== 'string' ? '' : vif.MAC
    const ref = asRef(
      await o.xapi.call('VIF.create', {
        device: String(vif.device),
        network: network.$ref,
        VM: vmRef,
        MAC,
        MTU: typeof vif.MTU === 'number' ? vif.MTU : 1500,
        other_config: vif.other_config ?? {},
        qos_algorithm_type: typeof vif.qos_algorithm_type === 'string' ? vif.qos_algorithm_type : '',
        qos_algorithm_params: vif.qos_algorithm_params ?? {},
      }),
      'VIF.create',
    )
    const record = await o.xapi.waitObject('VIF', ref, { signal: o.signal })
    out.push({ device: record.device, networkUuid: network.uuid, MAC: record.MAC })
  }
  return out
}

/** XO's last steps: final name, description, tag, the record's own blocked operations (start unblocked). */
async function finalize(o: ImportVmBackupOptions, p: Prepared, vmRef: string): Promise<void> {
  const x = o.xapi
  await x.call('VM.set_name_label', vmRef, p.plan.finalName)
  await x.call('VM.set_name_description', vmRef, restoredDescription(p.metadata, o.remoteName, new Date()))
  await x.call('VM.add_tags', vmRef, RESTORED_TAG)
  await x.call('VM.set_blocked_operations', vmRef, p.plan.blockedOperations)
}

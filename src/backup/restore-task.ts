/**
 * `backup.restore` (XO's restore: import into a pool), disk part: for the backup named by
 * `metadataPath`, each disk's chain is opened on the remote and streamed as one flattened dynamic VHD
 * (`VhdChain.vhdStream`) into a new VDI created on the SR `srUuid` (`VDI.create`, then
 * `PUT /import_raw_vdi/?format=vhd` under an XAPI task, restore-import.ts). The VDIs are labelled with
 * the task's `name`, or the source disk's name followed by the backup's timestamp, and carry the
 * source in `other_config` (`xo:backup-proxy:restore:*`). The result lists the new VDI uuids in VBD order.
 *
 * Cancel (the job's signal) cancels the XAPI task and ends the upload. Nothing partial stays: when a
 * disk fails, every VDI this restore created is destroyed before the error is reported.
 * Creating the VM (record, VBDs, VIFs) and `start` are not supported: `start: true` is refused up front.
 */
import { BackupProxyError, CancelledError, TaskInvalidError, serializeError, type JsonValue } from '../common/errors.js'
import type { Logger } from '../common/log.js'
import type { JobProgress } from '../queue/client.js'
import type { LogTask } from '../queue/task-log.js'
import type { BackupRestoreTask } from '../queue/tasks.js'
import type { Remote } from '../remotes/remote.js'
import { openChain, type VhdChain } from '../vhd/chain.js'
import { FOOTER_SIZE, HEADER_SIZE, batSizeBytes, bitmapSizeBytes } from '../vhd/constants.js'
import { XapiClient } from '../xapi/client.js'
import { parseMetadata, resolveVhdPath, sourceVdiUuid, timestampOfName, type BackupMetadata } from './layout.js'
import { putVdiImport } from './restore-import.js'

export interface RestoredVdi {
  uuid: string
  nameLabel: string
  /** uuid of the backed-up (source) VDI */
  sourceVdiUuid: string | null
  /** position of the disk in the backed-up VM (VBD userdevice), when known */
  userdevice: string | null
  virtualSizeBytes: number
  /** bytes of VHD uploaded */
  sizeBytes: number
}

export interface RestoreToSrResult {
  metadataPath: string
  timestamp: string
  vmUuid: string
  srUuid: string
  vdis: RestoredVdi[]
}

export interface RestoreToSrEnv {
  remote: Remote
  signal: AbortSignal
  root: LogTask
  logger: Logger
  progress: (p: JobProgress) => void
  /** default: XapiClient.connect with the task's XAPI */
  connectXapi?: (task: BackupRestoreTask, signal: AbortSignal) => Promise<XapiClient>
}

interface DiskPlan {
  ref: string
  vhdPath: string
  sourceVdiUuid: string | null
  sourceName: string
  userdevice: string | null
}

/** Refuses what this version cannot do, before anything is read or created. */
export function checkRestoreTask(task: BackupRestoreTask): void {
  if (task.start) {
    throw new TaskInvalidError(
      'backup.restore: start: true is not supported: this version restores the disks only (new VDIs on the SR, no VM record); send start: false and attach the VDIs to a VM',
      { fields: { field: 'start' } },
    )
  }
}

/** VM uuid of a backup: the metadata's VM record, else the directory of the metadata file. */
function vmUuidOf(metadata: BackupMetadata, metadataPath: string): string {
  const fromRecord = metadata.vm.uuid
  if (typeof fromRecord === 'string') return fromRecord
  const dir = metadataPath.split('/')[1]
  if (dir === undefined) throw new BackupProxyError('E_BACKUP', `backup metadata ${metadataPath}: no VM uuid (no vm.uuid, not under xo-vm-backups/<vm>/)`)
  return dir
}

/** Disks of the backup in VBD order (userdevice), those without a VBD last. */
function planDisks(metadata: BackupMetadata, vmUuid: string): DiskPlan[] {
  const userdeviceOf = new Map<string, string>()
  for (const vbd of Object.values(metadata.vbds)) {
    if (typeof vbd.VDI === 'string' && typeof vbd.userdevice === 'string') userdeviceOf.set(vbd.VDI, vbd.userdevice)
  }
  const plans = Object.entries(metadata.vhds).map(([ref, rel]): DiskPlan => {
    const name = metadata.vdis[ref]?.name_label
    return {
      ref,
      vhdPath: resolveVhdPath(vmUuid, rel),
      sourceVdiUuid: sourceVdiUuid(metadata, ref) ?? null,
      sourceName: typeof name === 'string' && name !== '' ? name : 'disk',
      userdevice: userdeviceOf.get(ref) ?? null,
    }
  })
  const key = (p: DiskPlan): number => (p.userdevice === null ? Number.MAX_SAFE_INTEGER : Number(p.userdevice))
  return plans.sort((a, b) => key(a) - key(b))
}

/** Exact byte size of `chain.vhdStream()`: footer, header, BAT, present blocks (bitmap + data), footer. */
function flattenedSizeBytes(chain: VhdChain): number {
  const { header } = chain.flattenedHead()
  const blocks = chain.blockIndexes().length
  return FOOTER_SIZE + HEADER_SIZE + batSizeBytes(header.maxTableEntries) + blocks * (bitmapSizeBytes(chain.blockSizeBytes) + chain.blockSizeBytes) + FOOTER_SIZE
}

async function defaultConnect(task: BackupRestoreTask, signal: AbortSignal): Promise<XapiClient> {
  const x = task.xapi
  return XapiClient.connect({ url: x.url, user: x.credentials.username, password: x.credentials.password, allowUnauthorized: x.allowUnauthorized, signal })
}

/** Runs the restore of `task` (already checked with `checkRestoreTask`). */
export async function restoreToSr(task: BackupRestoreTask, env: RestoreToSrEnv): Promise<RestoreToSrResult> {
  checkRestoreTask(task)
  const { remote, signal, root } = env
  const metadata = parseMetadata(task.metadataPath, (await remote.readFile(task.metadataPath)).toString('utf8'))
  const timestamp = timestampOfName(task.metadataPath.split('/').pop() ?? '') ?? String(metadata.timestamp)
  const vmUuid = vmUuidOf(metadata, task.metadataPath)
  const disks = planDisks(metadata, vmUuid)
  if (disks.length === 0) throw new BackupProxyError('E_BACKUP', `backup ${task.metadataPath} has no disk to restore`, { fields: { retryable: false } })
  // open every chain first: a broken backup fails before anything is created on the pool
  const chains: VhdChain[] = []
  for (const d of disks) chains.push(await openChain(remote, d.vhdPath, { signal }))
  const sizes = chains.map(flattenedSizeBytes)
  const totalBytes = sizes.reduce((a, b) => a + b, 0)

  const xapi = await (env.connectXapi ?? defaultConnect)(task, signal)
  const created: string[] = []
  try {
    const sr = xapi.listSrs().find((s) => s.uuid === task.srUuid)
    if (sr === undefined) {
      throw new BackupProxyError('E_BACKUP', `SR ${task.srUuid} is not in the pool at ${xapi.url}; its SRs are: ${xapi.listSrs().map((s) => `${s.uuid} (${s.name_label})`).join(', ')}`, {
        fields: { retryable: false, srUuid: task.srUuid },
      })
    }
    const out: RestoredVdi[] = []
    let doneBytes = 0
    for (const [i, d] of disks.entries()) {
      signal.throwIfAborted()
      const chain = chains[i]!
      const nameLabel = task.name ?? `${d.sourceName} (${timestamp})`
      const diskTask = root.child(`restore disk ${d.sourceName}`, { type: 'VDI', id: d.sourceVdiUuid ?? d.ref })
      try {
        const vdiRef = await xapi.createVdi({
          srRef: sr.$ref,
          nameLabel,
          nameDescription: `restored by backup-proxy from backup ${timestamp} of VDI ${d.sourceVdiUuid ?? d.ref}`,
          virtualSizeBytes: chain.virtualSizeBytes,
          otherConfig: { 'xo:backup-proxy:restore:backup': task.metadataPath, 'xo:backup-proxy:restore:sourceVdi': d.sourceVdiUuid ?? '' },
        })
        created.push(vdiRef)
        const size = await importDisk(xapi, vdiRef, chain, sizes[i]!, signal, (n) => env.progress({ percent: Math.floor((100 * (doneBytes + n)) / Math.max(1, totalBytes)), doneBytes: doneBytes + n, totalBytes }))
        doneBytes += size
        const vdi = await xapi.waitObject('VDI', vdiRef)
        out.push({ uuid: vdi.uuid, nameLabel, sourceVdiUuid: d.sourceVdiUuid, userdevice: d.userdevice, virtualSizeBytes: chain.virtualSizeBytes, sizeBytes: size })
        diskTask.end('success', { size, vdiUuid: vdi.uuid })
      } catch (error) {
        diskTask.end(signal.aborted ? 'interrupted' : 'failure', serializeError(error) as unknown as JsonValue)
        throw error
      }
    }
    return { metadataPath: task.metadataPath, timestamp, vmUuid, srUuid: task.srUuid, vdis: out }
  } catch (error) {
    for (const ref of created.reverse()) {
      await xapi.destroyVdi(ref).catch((e: unknown) => root.warning(`could not remove the incomplete VDI ${ref}: remove it by hand`, { error: serializeError(e).message }))
    }
    if (signal.aborted && !(error instanceof CancelledError)) throw new CancelledError('the restore was cancelled; the VDIs it created were removed', { cause: error })
    throw error
  } finally {
    await xapi.close().catch((e: unknown) => env.logger.warn({ err: e }, 'closing the XAPI connection failed'))
  }
}

/** One disk: the chain's flattened VHD uploaded under a fresh XAPI task; resolves with the bytes sent. */
async function importDisk(xapi: XapiClient, vdiRef: string, chain: VhdChain, sizeBytes: number, signal: AbortSignal, onBytes: (n: number) => void): Promise<number> {
  const descriptor = await xapi.importDescriptor(vdiRef, 'vhd')
  const onAbort = (): void => void xapi.cancelTask(descriptor.taskRef).catch(() => undefined)
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    const stream = chain.vhdStream({ signal })
    let sent = 0
    stream.on('data', (c: Buffer) => {
      sent += c.length
      onBytes(sent)
    })
    const settled = xapi.waitTask(descriptor.taskRef)
    settled.catch(() => undefined) // awaited below, after the upload
    await putVdiImport(descriptor, stream, { signal, sizeBytes })
    await settled
    if (sent !== sizeBytes) throw new BackupProxyError('E_BACKUP', `restore of ${chain.top.path}: sent ${sent} bytes, expected ${sizeBytes}`)
    return sent
  } catch (error) {
    await xapi.cancelTask(descriptor.taskRef).catch(() => undefined)
    throw error
  }
  finally {
    signal.removeEventListener('abort', onAbort)
  }
}

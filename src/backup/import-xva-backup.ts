/**
 * Whole-VM restore of a full backup (an XVA, XO's `mode: 'full'`) into a pool: the `full` branch of
 * import-vm-backup.ts, as XO's ImportVmBackup does it — the XVA streamed to XAPI's VM import onto the SR
 * (through the `xvaImporter`: the stream pool's `backup.restoreXva` thread in a proxy, xva-import.ts),
 * its MD5 checked against the `.xva.checksum` on the way (a mismatch breaks the upload off before its end:
 * E_XVA_CORRUPT, nothing imported), then XO's finishing touches on the new VM: `<name> (<timestamp>)`,
 * the `Restored on … from …` description, the `restored from backup` tag, the backup keys of
 * `other_config` removed; started when asked. XAPI refusing the XVA's inner checksums (`IMPORT_ERROR`) is
 * reported as E_XVA_CORRUPT too. Any failure after the import removes the VM and its disks.
 */
import { BackupProxyError, CancelledError, XapiError, serializeError } from '../common/errors.js'
import type { XapiClient } from '../xapi/client.js'
import type { BackupMetadata } from './layout.js'
import { formatTimestamp, vmDir } from './layout.js'
import { BACKUP_OTHER_CONFIG_KEYS, RESTORED_TAG, restoredDescription } from './restore-vm-plan.js'
import type { ImportVmBackupOptions, ImportVmBackupResult } from './import-vm-backup.js'
import { parseXvaChecksum, runXvaImport } from './xva-import.js'

async function readChecksum(o: ImportVmBackupOptions, path: string): Promise<string | undefined> {
  try {
    return parseXvaChecksum((await o.remote.readFile(`${path}.checksum`)).toString('utf8'))
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ENOENT') return undefined // XO writes none on an encrypted remote
    throw error
  }
}

function corruptIfRefused(error: unknown, path: string): unknown {
  if (error instanceof XapiError && error.xapiCode === 'IMPORT_ERROR') {
    return new BackupProxyError('E_XVA_CORRUPT', `XAPI refused the XVA ${path}: ${error.message}; restore another backup point (XAPI kept nothing of it)`, { cause: error, fields: { retryable: false } })
  }
  return error
}

async function removeVm(xapi: XapiClient, vmRef: string, o: ImportVmBackupOptions): Promise<void> {
  const warn = (what: string) => (e: unknown) => o.log?.warning(`could not remove the incomplete ${what}: remove it by hand`, { error: serializeError(e).message })
  const disks = xapi.vmDisks(vmRef).map((d) => d.vdi.$ref)
  const state = await xapi.call('VM.get_power_state', vmRef).catch(() => 'Halted')
  if (state === 'Running') await xapi.callAsync('VM.hard_shutdown', vmRef).catch(warn(`VM ${vmRef} (shutdown)`))
  await xapi.callAsync('VM.destroy', vmRef).catch(warn(`VM ${vmRef}`))
  for (const ref of disks) await xapi.destroyVdi(ref).catch(warn(`VDI ${ref}`))
}

export async function importXvaBackup(o: ImportVmBackupOptions, metadata: BackupMetadata, srRef: string, meta: { timestamp: string; vmUuid: string; srUuid: string }): Promise<ImportVmBackupResult> {
  const { xapi, signal } = o
  const xvaPath = `${vmDir(meta.vmUuid)}/${String(metadata.xva).replace(/^\.\//, '')}`
  const sizeBytes = (await o.remote.stat(xvaPath)).size
  const checksum = await readChecksum(o, xvaPath)
  if (checksum === undefined) o.log?.info(`${xvaPath} has no checksum file: XAPI checks its chunks`)
  const log = o.log?.child('transfer')
  const descriptor = await xapi.vmImportDescriptor(srRef)
  const onAbort = (): void => void xapi.cancelTask(descriptor.taskRef).catch(() => undefined)
  signal.addEventListener('abort', onAbort, { once: true })
  const settled = xapi.waitTask(descriptor.taskRef)
  settled.catch(() => undefined)
  let vmRef: string
  try {
    const importer = o.xvaImporter ?? runXvaImport
    await importer(
      { remote: o.remoteSpec, xvaPath, sizeBytes, ...(checksum === undefined ? {} : { checksum }), descriptor },
      { signal, onProgress: (p) => o.onProgress?.({ percent: Math.floor((100 * p.sentBytes) / Math.max(1, p.totalBytes)), doneBytes: p.sentBytes, totalBytes: p.totalBytes }) },
    )
    const result = await settled
    const ref = Array.isArray(result) ? (result[0] as unknown) : result
    if (typeof ref !== 'string' || !ref.startsWith('OpaqueRef:')) throw new XapiError(`XAPI's VM import returned ${JSON.stringify(result)} instead of the new VM`)
    vmRef = ref
  } catch (error) {
    await xapi.cancelTask(descriptor.taskRef).catch(() => undefined)
    const reported = corruptIfRefused(error instanceof BackupProxyError && error.code === 'E_XVA_CORRUPT' ? error : await settled.then(() => error, (e: unknown) => (e instanceof XapiError && e.xapiCode === 'IMPORT_ERROR' ? e : error)), xvaPath)
    log?.end(signal.aborted ? 'interrupted' : 'failure', serializeError(reported) as never)
    throw signal.aborted ? new CancelledError('the restore was cancelled; XAPI keeps nothing of an unfinished import', { cause: reported }) : reported
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
  try {
    await finalize(o, metadata, vmRef, meta.timestamp)
    if (o.start === true) {
      await xapi.callAsync('VM.start', vmRef, false, false)
      await xapi.waitObject('VM', vmRef, { predicate: (vm) => vm.power_state === 'Running', signal })
    }
    const vm = await xapi.waitObject('VM', vmRef, { signal })
    const vdis = xapi.vmDisks(vmRef).map(({ vbd, vdi }) => ({
      uuid: vdi.uuid,
      nameLabel: vdi.name_label,
      sourceVdiUuid: null,
      userdevice: String(vbd.userdevice),
      virtualSizeBytes: Number(vdi.virtual_size),
      sizeBytes: 0,
    }))
    const vifs = vm.VIFs.map((ref) => xapi.get('VIF', ref)).map((v) => ({ device: v.device, networkUuid: xapi.get('network', v.network).uuid, MAC: v.MAC }))
    // XO's transfer result: what its restore log shows (size) and links (the new VM)
    log?.end('success', { size: sizeBytes, id: vm.uuid })
    return { metadataPath: o.metadataPath, timestamp: meta.timestamp, vmUuid: meta.vmUuid, restoredVmUuid: vm.uuid, srUuid: meta.srUuid, started: o.start === true, sizeBytes, vdis, vifs }
  } catch (error) {
    log?.end(signal.aborted ? 'interrupted' : 'failure', serializeError(error) as never)
    await removeVm(xapi, vmRef, o)
    throw error
  }
}

/** XO's last steps after a VM import: name, description, tag, backup keys of other_config removed. */
async function finalize(o: ImportVmBackupOptions, metadata: BackupMetadata, vmRef: string, timestamp: string): Promise<void> {
  const x = o.xapi
  const name = typeof metadata.vm.name_label === 'string' ? metadata.vm.name_label : ''
  await x.call('VM.add_tags', vmRef, RESTORED_TAG)
  if (o.additionalVmTag !== undefined) await x.call('VM.add_tags', vmRef, o.additionalVmTag)
  await x.call('VM.set_name_label', vmRef, o.nameLabel ?? `${name} (${formatTimestamp(metadata.timestamp)})`)
  await x.call('VM.set_name_description', vmRef, restoredDescription(metadata, o.remoteName, new Date()))
  await x.setOtherConfig('VM', vmRef, Object.fromEntries(BACKUP_OTHER_CONFIG_KEYS.map((k) => [k, null])))
  void timestamp
}

/**
 * `backup.restore` (XO's `backup.importVmBackup`): the backup named by `metadataPath` restored as a new
 * VM on the SR `srUuid` of the task's pool (import-vm-backup.ts): VM record, one VDI per disk filled
 * through the stream pool (`backup.restoreDisk` thread task), VBDs, VIFs, optional start. `name`
 * replaces XO's `<name> (<timestamp>)` for the VM. The result names the restored VM and its VDIs in VBD
 * order; the job's task log has XO's `transfer` subtask (result `{ size, id }`) with one subtask per disk.
 *
 * Cancel (the job's signal) cancels the XAPI import task and ends the upload. Nothing partial stays: on
 * any failure the VM and every VDI this restore created are removed before the error is reported.
 */
import type { Logger } from '../common/log.js'
import type { JobProgress } from '../queue/client.js'
import type { LogTask } from '../queue/task-log.js'
import type { BackupRestoreTask } from '../queue/tasks.js'
import type { Remote } from '../remotes/remote.js'
import { XapiClient } from '../xapi/client.js'
import { inlineImporter, type DiskImporter } from './disk-import.js'
import { importVmBackup, type ImportVmBackupResult } from './import-vm-backup.js'
import { remoteOptionsOf } from './run.js'
import type { XvaImporter } from './xva-import.js'

export type RestoreToSrResult = ImportVmBackupResult

interface RestoreToSrEnv {
  remote: Remote
  signal: AbortSignal
  root: LogTask
  logger: Logger
  progress: (p: JobProgress) => void
  /** default: on this thread; a proxy passes the stream pool's (pool-importer.ts) */
  importer?: DiskImporter
  /** default: on this thread; a proxy passes the stream pool's (pool-importer.ts) */
  xvaImporter?: XvaImporter
  /** default: XapiClient.connect with the task's XAPI */
  connectXapi?: (task: BackupRestoreTask, signal: AbortSignal) => Promise<XapiClient>
}

async function defaultConnect(task: BackupRestoreTask, signal: AbortSignal): Promise<XapiClient> {
  const x = task.xapi
  return XapiClient.connect({ url: x.url, user: x.credentials.username, password: x.credentials.password, allowUnauthorized: x.allowUnauthorized, signal })
}

/** Runs the restore of `task`. */
export async function restoreToSr(task: BackupRestoreTask, env: RestoreToSrEnv): Promise<RestoreToSrResult> {
  const xapi = await (env.connectXapi ?? defaultConnect)(task, env.signal)
  try {
    return await importVmBackup({
      remote: env.remote,
      remoteSpec: { url: task.remote.url, options: remoteOptionsOf(task.remote) },
      ...(task.remoteId === undefined ? {} : { remoteName: task.remoteId }),
      metadataPath: task.metadataPath,
      xapi,
      srUuid: task.srUuid,
      ...(task.mapVdisSrs === undefined ? {} : { mapVdisSrs: task.mapVdisSrs }),
      start: task.start,
      ...(task.name === undefined ? {} : { nameLabel: task.name }),
      importer: env.importer ?? inlineImporter,
      ...(env.xvaImporter === undefined ? {} : { xvaImporter: env.xvaImporter }),
      signal: env.signal,
      log: env.root,
      onProgress: env.progress,
    })
  } finally {
    await xapi.close().catch((e: unknown) => env.logger.warn({ err: e }, 'closing the XAPI connection failed'))
  }
}

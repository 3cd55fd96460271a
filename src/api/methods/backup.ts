/**
 * `backup.*` methods with XO's parameter names and result shapes:
 *   run                 enqueue the job into this proxy's queue (or `api.pool`), follow it, and answer
 *                       the XO task log as NDJSON (`streamLogs: true`, what xo-server asks) or, without
 *                       streamLogs, the run's result once it ended. A job id that is already waiting or
 *                       running (here or in the queue) → XO's "job is already running" (data.code
 *                       E_JOB_RUNNING, data.jobId).
 *   listRunningJobs     XO job ids waiting or running in the queue (NDJSON, as XO's array answer)
 *   listVmBackups       { [remoteId]: { [vmUuid]: formatted backups } }; a remote that fails is logged and left out
 *   deleteVmBackup(s)   by the ids listVmBackups gives
 *   importVmBackup      restore a whole VM from a backup id (XO's params: backupId, remote, srUuid, settings,
 *                       streamLogs, xapi): a `backup.restore` task in the same queue, followed like a run;
 *                       answers XO's { size, id } (the new VM's uuid), or its task log as NDJSON whose
 *                       root `restore` task (XO's properties: backupId, the metadata's jobId, srId, time)
 *                       ends with that same result (what xo-server returns `.id` of)
 */
import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import { errorCode, type JsonValue } from '../../common/errors.js'
import { parseMetadata } from '../../backup/layout.js'
import type { QueuedJobData } from '../../queue/client.js'
import { queueName } from '../../queue/names.js'
import { method, RpcError, RPC_CODES, type MethodDefinition } from '../rpc.js'
import { restoreTaskFromXo, rootProperties, taskFromXo } from '../xo-job.js'
import { deleteVmBackups, listFormattedVmBackups, parseBackupId } from '../xo-backups.js'
import { withXoRemote, xoRemoteParam, type ApiDeps } from './deps.js'

const objectParam = z.record(z.string(), z.unknown())

/** An XO-style task id: sortable time in base 36, a random part. */
export function newXoTaskId(): string {
  return `${Date.now().toString(36).padStart(9, '0')}-${randomBytes(6).toString('hex')}`
}

function jobRunning(jobId: string): RpcError {
  return new RpcError(RPC_CODES.SERVER_ERROR, 'job is already running', { code: 'E_JOB_RUNNING', jobId })
}

/** XO job ids with a backup.run waiting or running in the target queue. */
async function queuedJobIds(deps: ApiDeps): Promise<string[]> {
  const queue = deps.client.queue(queueName(deps.target))
  const jobs = await queue.getJobs(['active', 'waiting', 'delayed', 'prioritized', 'waiting-children'], 0, 9999)
  const ids = new Set<string>()
  for (const job of jobs) {
    const key = (job.data as Partial<QueuedJobData> | undefined)?.dedupKey
    if (typeof key === 'string' && key.startsWith('backup.run:')) ids.add(key.split(':')[1]!)
  }
  return [...ids]
}

async function runningJobIds(deps: ApiDeps, starting: ReadonlySet<string>): Promise<string[]> {
  return [...new Set([...starting, ...deps.runs.runningJobIds(), ...(await queuedJobIds(deps))])].sort()
}

const runParams = z
  .object({
    job: z.object({ id: z.string().min(1).max(128) }).catchall(z.unknown()),
    remotes: objectParam,
    schedule: z.object({ id: z.string().min(1).max(128) }).catchall(z.unknown()),
    xapis: objectParam.optional(),
    recordToXapi: objectParam.optional(),
    jobData: objectParam.optional(),
    streamLogs: z.boolean().optional(),
  })
  .strict()

function runMethod(deps: ApiDeps, starting: Set<string>): MethodDefinition {
  return method('run a backup job', runParams, async ({ streamLogs = false, ...params }, ctx) => {
    const jobId = params.job.id
    if (starting.has(jobId) || (await runningJobIds(deps, starting)).includes(jobId)) throw jobRunning(jobId)
    starting.add(jobId)
    let handle
    try {
      const { task, warnings } = taskFromXo(params)
      for (const w of warnings) ctx.logger.warn({ jobId }, `backup.run: ${w}`)
      handle = await deps.client.enqueue(deps.target, task)
    } catch (error) {
      if (errorCode(error) === 'E_DUPLICATE_JOB') throw jobRunning(jobId)
      throw error
    } finally {
      starting.delete(jobId)
    }
    const rec = deps.runs.start(handle, newXoTaskId(), jobId, rootProperties(params))
    ctx.logger.info({ jobId, task: rec.id, queue: handle.queue, queueJobId: handle.id }, 'backup.run: job enqueued for Xen Orchestra')
    if (streamLogs) return deps.runs.stream(rec, ctx.signal)
    const end = await rec.finished
    if (end.status === 'failure') {
      const reported = typeof end.result === 'object' && end.result !== null ? (end.result as { message?: JsonValue }).message : undefined
      const message = typeof reported === 'string' ? reported : 'the backup run failed'
      throw new RpcError(RPC_CODES.SERVER_ERROR, message, { code: 'E_BACKUP', taskId: rec.id })
    }
    return end.result
  })
}

const importParams = z
  .object({
    backupId: z.string().min(1).max(1024),
    remote: xoRemoteParam,
    srUuid: z.string().min(1).max(64),
    settings: objectParam.optional(),
    streamLogs: z.boolean().optional(),
    xapi: objectParam,
  })
  .strict()

function importMethod(deps: ApiDeps): MethodDefinition {
  return method('create a new VM from a backup', importParams, async ({ backupId, remote, srUuid, settings, streamLogs = false, xapi }, ctx) => {
    const { metadataPath } = parseBackupId(backupId)
    // XO's restore settings: mapVdisSrs is applied; additionalVmTag, newMacAddresses, useDifferentialRestore not yet
    const ignored = Object.keys(settings ?? {}).filter((k) => k !== 'mapVdisSrs')
    if (ignored.length > 0) ctx.logger.warn({ settings: ignored }, 'backup.importVmBackup: these XO restore settings are not applied by this proxy')
    const mapVdisSrs = settings?.mapVdisSrs
    const task = restoreTaskFromXo({ remote, metadataPath, srUuid, xapi, ...(mapVdisSrs === undefined ? {} : { mapVdisSrs }) })
    // as XO's proxy: the metadata is read first (a missing backup fails the call), its jobId and timestamp go to the root task
    const metadata = await withXoRemote(remote, async (r) => parseMetadata(metadataPath, (await r.readFile(metadataPath)).toString('utf8')))
    const handle = await deps.client.enqueue(deps.target, task)
    const properties = { backupId, jobId: metadata.jobId, name: 'restore', srId: srUuid, time: metadata.timestamp }
    const rec = deps.runs.start(handle, newXoTaskId(), `restore:${backupId}`, properties, xoRestoreResult)
    ctx.logger.info({ task: rec.id, queue: handle.queue, queueJobId: handle.id }, 'backup.importVmBackup: restore enqueued for Xen Orchestra')
    if (streamLogs) return deps.runs.stream(rec, ctx.signal)
    const end = await rec.finished
    const result = typeof end.result === 'object' && end.result !== null && !Array.isArray(end.result) ? end.result : {}
    if (end.status !== 'success') {
      const message = typeof result.message === 'string' ? result.message : 'the restore failed'
      throw new RpcError(RPC_CODES.SERVER_ERROR, message, { code: typeof result.code === 'string' ? result.code : 'E_BACKUP', taskId: rec.id })
    }
    return result
  })
}

/**
 * XO's ImportVmBackup answers the restored VM's uuid and the bytes transferred: the scalar answer and
 * the result of the streamed root task's end, which xo-server's importVmBackupNg returns `.id` of.
 */
function xoRestoreResult(result: JsonValue | undefined): JsonValue {
  const r = typeof result === 'object' && result !== null && !Array.isArray(result) ? result : {}
  return { size: r.sizeBytes ?? 0, id: r.restoredVmUuid ?? null }
}

export function backupMethods(deps: ApiDeps): Record<string, MethodDefinition> {
  const starting = new Set<string>()
  return {
    'backup.run': runMethod(deps, starting),
    'backup.listRunningJobs': method('returns a list of running jobs', z.object({}).strict(), () => runningJobIds(deps, starting)),
    'backup.listVmBackups': method(
      'list VM backups',
      z.object({ remotes: z.record(z.string(), xoRemoteParam), vmId: z.string().optional() }).strict(),
      async ({ remotes, vmId }, ctx) => {
        const out: Record<string, JsonValue> = {}
        await Promise.all(
          Object.entries(remotes).map(async ([remoteId, remote]) => {
            try {
              out[remoteId] = await withXoRemote(remote, (r) => listFormattedVmBackups(r, remoteId, vmId))
            } catch (error) {
              ctx.logger.warn({ err: error, remoteId }, 'backup.listVmBackups: listing a remote failed; it is left out')
            }
          }),
        )
        return out
      },
    ),
    'backup.deleteVmBackup': method('delete VM backup', z.object({ filename: z.string().min(1).max(1024), remote: xoRemoteParam }).strict(), async ({ filename, remote }) => {
      await withXoRemote(remote, (r) => deleteVmBackups(r, [filename]))
    }),
    'backup.deleteVmBackups': method(
      'delete VM backups',
      z.object({ filenames: z.array(z.string().min(1).max(1024)).max(10_000), remote: xoRemoteParam }).strict(),
      async ({ filenames, remote }) => {
        await withXoRemote(remote, (r) => deleteVmBackups(r, filenames))
      },
    ),
    'backup.importVmBackup': importMethod(deps),
  }
}

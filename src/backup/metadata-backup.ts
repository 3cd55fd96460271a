/**
 * One `backup.metadata` task: Xen Orchestra's metadata backup (Metadata runner). For each pool of
 * `job.pools` (retentionPoolMetadata > 0) the pool's database dump is fetched once (XAPI's
 * `GET /pool/xmldbdump`) and written to every remote with its metadata.json; when the job carries XO's
 * configuration (`job.xoMetadata`, retentionXoMetadata > 0) it is written the same way; then each
 * remote keeps the newest `retention` backups of the schedule (per pool). Layout: metadata-layout.ts.
 * XO's refusals are kept: no remote, no pool and no XO data, or no retention for the modes asked.
 *
 * Task log as XO's: one task per pool (`type: 'pool'`, with the pool and master records) and one for XO
 * (`type: 'xo'`), each with one subtask per remote; a remote that fails fails its task, not the others.
 * `restorePoolMetadata` sends a backup's dump back to a pool (XAPI's `PUT /pool/xmldbdump`).
 */
import { Readable } from 'node:stream'
import { BackupProxyError, CancelledError, toError, type JsonValue } from '../common/errors.js'
import type { BackupMetadataTask, TaskXapi } from '../queue/tasks.js'
import { createRemote } from '../remotes/index.js'
import type { Remote } from '../remotes/remote.js'
import { XapiClient } from '../xapi/client.js'
import { downloadPoolDump, poolRecords, uploadPoolDump } from '../xapi/pool-dump.js'
import { formatTimestamp } from './layout.js'
import { DIR_XO_CONFIG_BACKUPS, DIR_XO_POOL_METADATA_BACKUPS, deleteOldMetadataBackups, parseMetadataBackupId } from './metadata-layout.js'
import { idsOfPattern } from './mirror-plan.js'
import type { RemoteMetricsHook } from './ports.js'
import { remoteOptionsOf } from './run.js'
import { attachTaskLog, createTaskLog, type Task, type TaskLogEvent, type TaskSummary } from './task-log.js'

interface MetadataEnv {
  signal: AbortSignal
  emit?: (event: TaskLogEvent) => void
  parentTaskId?: string
  remoteMetrics?: RemoteMetricsHook
  /** default: XapiClient.connect */
  connectXapi?: (x: TaskXapi, signal: AbortSignal) => Promise<XapiClient>
}

interface Retentions {
  pool: number
  xo: number
}

/** retentionPoolMetadata / retentionXoMetadata of '' < schedule (a null is ignored, as xo-server does). */
function metadataRetentions(task: BackupMetadataTask): Retentions {
  const out: Retentions = { pool: 0, xo: 0 }
  for (const key of ['', task.schedule.id]) {
    const s = task.job.settings[key]
    if (typeof s?.retentionPoolMetadata === 'number') out.pool = s.retentionPoolMetadata
    if (typeof s?.retentionXoMetadata === 'number') out.xo = s.retentionXoMetadata
  }
  return out
}

function connect(x: TaskXapi, signal: AbortSignal): Promise<XapiClient> {
  return XapiClient.connect({ url: x.url, user: x.credentials.username, password: x.credentials.password, allowUnauthorized: x.allowUnauthorized, signal })
}

type Writer = (remote: Remote) => Promise<void>

/** Runs `write` on every remote, each in its own subtask. */
async function toRemotes(parent: Task, remotes: ReadonlyMap<string, Remote>, what: string, jobId: string, write: Writer): Promise<void> {
  await Promise.all([...remotes].map(async ([id, remote]) => {
    const sub = parent.child(`Starting ${what} for the remote (${id}). (${jobId})`, { id, type: 'remote' })
    try {
      await write(remote)
      sub.end('success')
    } catch (error) {
      sub.fail(error)
    }
  }))
}

async function backupPool(poolUuid: string, task: BackupMetadataTask, env: MetadataEnv, root: Task, remotes: ReadonlyMap<string, Remote>, retention: number, signal: AbortSignal): Promise<void> {
  const xapiId = task.recordToXapi[poolUuid]
  const x = xapiId === undefined ? undefined : task.xapis[xapiId]
  if (x === undefined) {
    root.child('get pool record', { id: poolUuid, type: 'pool' }).fail(new BackupProxyError('E_TASK_INVALID', `no XAPI given for pool ${poolUuid} (recordToXapi)`))
    return
  }
  const client = await (env.connectXapi ?? connect)(x, signal)
  try {
    const { pool, master } = await poolRecords(client)
    const poolTask = root.child(`Starting metadata backup for the pool (${poolUuid}). (${task.job.id})`, { id: poolUuid, type: 'pool', pool: pool as JsonValue, poolMaster: (master ?? null) as JsonValue })
    try {
      const timestamp = Date.now()
      const dump = await downloadPoolDump(client, { allowUnauthorized: x.allowUnauthorized, signal })
      const poolDir = `${DIR_XO_POOL_METADATA_BACKUPS}/${task.schedule.id}/${poolUuid}`
      const dir = `${poolDir}/${formatTimestamp(timestamp)}`
      const metadata = JSON.stringify({ jobId: task.job.id, jobName: task.job.name, pool, poolMaster: master, scheduleId: task.schedule.id, scheduleName: task.schedule.name, timestamp }, null, 2)
      await toRemotes(poolTask, remotes, `metadata backup for the pool (${poolUuid})`, task.job.id, async (remote) => {
        await remote.writeFile(`${dir}/data`, dump, { signal })
        await remote.writeFile(`${dir}/metadata.json`, metadata, { signal })
        await deleteOldMetadataBackups(remote, poolDir, retention)
      })
      poolTask.end(undefined, { size: dump.length })
    } catch (error) {
      poolTask.fail(error)
    }
  } finally {
    await client.close().catch(() => undefined)
  }
}

async function backupXo(task: BackupMetadataTask, root: Task, remotes: ReadonlyMap<string, Remote>, retention: number, signal: AbortSignal): Promise<void> {
  const xoTask = root.child(`Starting XO metadata backup. (${task.job.id})`, { type: 'xo' })
  const data = task.job.xoMetadata!
  const isJson = typeof data === 'string'
  const dataName = isJson ? './data.json' : './data'
  const timestamp = Date.now()
  const scheduleDir = `${DIR_XO_CONFIG_BACKUPS}/${task.schedule.id}`
  const dir = `${scheduleDir}/${formatTimestamp(timestamp)}`
  const metadata = JSON.stringify({ data: dataName, jobId: task.job.id, jobName: task.job.name, scheduleId: task.schedule.id, scheduleName: task.schedule.name, timestamp }, null, 2)
  const bytes = isJson ? Buffer.from(data, 'utf8') : Buffer.from(data.data, data.encoding)
  await toRemotes(xoTask, remotes, 'XO metadata backup', task.job.id, async (remote) => {
    await remote.writeFile(`${dir}/${dataName.slice(2)}`, bytes, { signal })
    await remote.writeFile(`${dir}/metadata.json`, metadata, { signal })
    await deleteOldMetadataBackups(remote, scheduleDir, retention)
  })
  xoTask.end(undefined, { size: bytes.length })
}

/** XO's refusals of a metadata job, before anything runs. */
function checkJob(task: BackupMetadataTask, remoteIds: string[], poolIds: string[], r: Retentions): void {
  const isXo = task.job.xoMetadata !== undefined
  if (remoteIds.length === 0) throw new BackupProxyError('E_TASK_INVALID', 'metadata backup job cannot run without remotes')
  if (!isXo && poolIds.length === 0) throw new BackupProxyError('E_TASK_INVALID', 'no metadata mode found: the job has neither pools nor XO metadata')
  if ((r.pool === 0 && r.xo === 0) || (!isXo && r.pool === 0) || (poolIds.length === 0 && r.xo === 0)) {
    throw new BackupProxyError('E_TASK_INVALID', 'no retentions corresponding to the metadata modes found: set retentionPoolMetadata and/or retentionXoMetadata above 0')
  }
}

export async function runMetadataBackup(task: BackupMetadataTask, env: MetadataEnv): Promise<TaskSummary> {
  const emit = env.emit ?? (() => undefined)
  const data = { jobId: task.job.id, jobName: task.job.name, scheduleId: task.schedule.id }
  const root = env.parentTaskId === undefined ? createTaskLog('metadata backup', data, emit) : attachTaskLog(env.parentTaskId, 'metadata backup', emit)
  const controller = new AbortController()
  const onAbort = () => controller.abort(new CancelledError('the metadata backup was cancelled', { cause: env.signal.reason }))
  if (env.signal.aborted) onAbort()
  env.signal.addEventListener('abort', onAbort, { once: true })
  const signal = controller.signal
  const remotes = new Map<string, Remote>()
  const detach: (() => void)[] = []
  try {
    const remoteIds = (idsOfPattern(task.job.remotes) ?? Object.keys(task.remotes)).filter((id) => id in task.remotes)
    const poolIds = idsOfPattern(task.job.pools) ?? []
    const retentions = metadataRetentions(task)
    checkJob(task, remoteIds, poolIds, retentions)
    for (const id of remoteIds) {
      const remote = createRemote(task.remotes[id]!.url, remoteOptionsOf(task.remotes[id]!))
      if (env.remoteMetrics !== undefined) detach.push(env.remoteMetrics(remote, id))
      try {
        await remote.open()
        remotes.set(id, remote)
      } catch (error) {
        root.child('get remote adapter', { id, type: 'remote' }).fail(error)
      }
    }
    if (remotes.size > 0) {
      if (retentions.pool > 0) {
        for (const poolUuid of poolIds) {
          try {
            await backupPool(poolUuid, task, env, root, remotes, retentions.pool, signal)
          } catch (error) {
            root.child('get pool record', { id: poolUuid, type: 'pool' }).fail(error)
          }
        }
      }
      if (task.job.xoMetadata !== undefined && retentions.xo > 0) await backupXo(task, root, remotes, retentions.xo, signal)
    }
    root.end()
  } catch (error) {
    root.fail(signal.aborted ? toError(signal.reason) : error)
  } finally {
    env.signal.removeEventListener('abort', onAbort)
    await Promise.all([...remotes.values()].map((r) => r.close().catch(() => undefined)))
    for (const d of detach) d()
  }
  return root.summary()
}

/** Sends a pool metadata backup's dump to the pool behind `client` (XO's RestoreMetadataBackup). */
export async function restorePoolMetadata(remote: Remote, backupId: string, client: XapiClient, options: { allowUnauthorized: boolean; signal: AbortSignal }): Promise<{ sizeBytes: number }> {
  const parsed = parseMetadataBackupId(backupId)
  if (parsed.type !== 'pool') throw new BackupProxyError('E_USAGE', `${backupId} is an XO configuration backup: restore it from Xen Orchestra (its data is XO's, not a pool's)`)
  const dump = await remote.readFile(`${parsed.dir}/data`, { signal: options.signal })
  await uploadPoolDump(client, Readable.from([dump]), options)
  return { sizeBytes: dump.length }
}

/** `restorePoolMetadata` onto the pool of `xapi` (XO's API call): connects, restores, disconnects. */
export async function restorePoolMetadataTo(remote: Remote, backupId: string, xapi: TaskXapi, signal: AbortSignal): Promise<{ sizeBytes: number }> {
  const client = await connect(xapi, signal)
  try {
    return await restorePoolMetadata(remote, backupId, client, { allowUnauthorized: xapi.allowUnauthorized, signal })
  } finally {
    await client.close().catch(() => undefined) // a failed disconnect does not hide the restore's outcome
  }
}


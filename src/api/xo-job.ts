/**
 * XO's `backup.run` parameters → our `backup.run` task. What xo-server sends (backups-ng executor):
 *   job        the backup job as stored in XO (id, name, mode, vms, settings, type, remotes, srs, proxy,
 *              userId, compression, ...); its `vms` is `{id: uuid}` or `{id: {__or: [uuids]}}` (XO resolves
 *              smart mode before calling a proxy) — any other pattern is passed on as a smart-mode pattern
 *   remotes    { [remoteId]: XO remote (id, name, url with credentials, options, enabled, proxy, ...) }
 *   schedule   XO schedule (id, jobId, cron, enabled, name, timezone)
 *   xapis      { [serverId]: { url, credentials: {username, password}, allowUnauthorized, httpProxy? } }
 *   recordToXapi { [vm or SR uuid]: serverId }
 *   jobData    what XO's job runner logged at the start (runJobId, userId, ...): becomes the root task's
 *              properties, as XO's backup worker does
 * Only XO's remote URL and our own remote options are used: XO's mount `options` string has no meaning
 * here and is dropped with a warning. The task schema then validates the result (E_TASK_INVALID naming
 * the field; XO's extra job fields are kept there and warned about).
 * The job's `type` picks the task: `backup` (or none) → `backup.run`, `mirrorBackup` → `backup.mirror`
 * (job.sourceRemote, job.filter; the source is one of `remotes`), `metadataBackup` → `backup.metadata`
 * (job.pools, job.xoMetadata: XO's configuration, sealed at rest as a secret).
 */
import type { JsonValue } from '../common/errors.js'
import type { TaskInputOf } from '../queue/tasks.js'

export interface XoRunParams {
  job: Record<string, unknown>
  remotes: Record<string, unknown>
  schedule: Record<string, unknown>
  xapis?: Record<string, unknown> | undefined
  recordToXapi?: Record<string, unknown> | undefined
  jobData?: Record<string, unknown> | undefined
}

interface TranslatedRun {
  task: TaskInputOf<'backup.run'> | TaskInputOf<'backup.mirror'> | TaskInputOf<'backup.metadata'>
  warnings: string[]
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** XO's `{id: ...}` simple pattern → our `{uuid: ...}`; anything else is a smart-mode pattern. */
function vmsFromXo(vms: unknown): unknown {
  if (isObject(vms) && Object.keys(vms).length === 1 && 'id' in vms) {
    const id = vms.id
    if (typeof id === 'string') return { uuid: id }
    if (isObject(id) && Object.keys(id).length === 1 && Array.isArray(id.__or)) return { uuid: id.__or }
  }
  if (isObject(vms)) return { type: 'VM', ...vms }
  return vms
}

function remoteFromXo(id: string, remote: unknown, warnings: string[]): unknown {
  if (!isObject(remote)) return remote
  const out: Record<string, unknown> = { url: remote.url }
  if (typeof remote.options === 'string' && remote.options.trim() !== '') warnings.push(`remote ${id}: XO mount options "${remote.options}" are not used by this proxy`)
  else if (isObject(remote.options)) out.options = remote.options
  return out
}

/** XO's metadata jobs send the server's `host` as it was registered (`10.0.0.1`, `host:443`): https:// is XAPI's default. */
export function xapiUrlFromXo(url: unknown): unknown {
  return typeof url === 'string' && url !== '' && !/^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? `https://${url}` : url
}

export function xapiFromXo(xapi: unknown): unknown {
  if (!isObject(xapi)) return xapi
  return { url: xapiUrlFromXo(xapi.url), credentials: xapi.credentials, ...(xapi.allowUnauthorized === undefined ? {} : { allowUnauthorized: xapi.allowUnauthorized }) }
}

export function taskFromXo(params: XoRunParams): TranslatedRun {
  const warnings: string[] = []
  const { job } = params
  const remotes = Object.fromEntries(Object.entries(params.remotes).map(([id, r]) => [id, remoteFromXo(id, r, warnings)]))
  const xapis = Object.fromEntries(Object.entries(params.xapis ?? {}).map(([id, x]) => [id, xapiFromXo(x)]))
  const jobData = params.jobData === undefined ? {} : { jobData: params.jobData }
  if (job.type === 'mirrorBackup' || job.type === 'metadataBackup') {
    const kind = job.type === 'mirrorBackup' ? 'backup.mirror' : 'backup.metadata'
    const task = { kind, job, schedule: params.schedule, remotes, xapis, recordToXapi: params.recordToXapi ?? {}, ...jobData } as unknown as TranslatedRun['task']
    return { task, warnings }
  }
  const task = {
    kind: 'backup.run',
    job: { ...job, vms: vmsFromXo(job.vms) },
    schedule: params.schedule,
    remotes,
    xapis,
    recordToXapi: params.recordToXapi ?? {},
    ...(params.jobData === undefined ? {} : { jobData: params.jobData }),
  } as unknown as TaskInputOf<'backup.run'>
  return { task, warnings }
}

/** The XO root task's properties: `name: 'backup run'` and XO's jobData (as XO's backup worker starts it). */
export function rootProperties(params: XoRunParams): Record<string, JsonValue> {
  const job = params.job
  const base: Record<string, JsonValue> = {
    jobId: typeof job.id === 'string' ? job.id : null,
    jobName: typeof job.name === 'string' ? job.name : '',
    mode: typeof job.mode === 'string' ? job.mode : null,
    scheduleId: typeof params.schedule.id === 'string' ? params.schedule.id : null,
  }
  const jobData = isObject(params.jobData) ? (JSON.parse(JSON.stringify(params.jobData)) as Record<string, JsonValue>) : {}
  return { ...base, ...jobData, name: 'backup run' }
}

/** XO's `backup.importVmBackup` parameters → our `backup.restore` task (the whole VM onto `srUuid`). */
export function restoreTaskFromXo(params: {
  remote: Record<string, unknown>
  metadataPath: string
  srUuid: string
  xapi: Record<string, unknown>
  /** XO's settings.mapVdisSrs, passed on as is (the task schema checks it) */
  mapVdisSrs?: unknown
}): TaskInputOf<'backup.restore'> {
  const warnings: string[] = []
  return {
    kind: 'backup.restore',
    remote: remoteFromXo('remote', params.remote, warnings),
    metadataPath: params.metadataPath,
    xapi: xapiFromXo(params.xapi),
    srUuid: params.srUuid,
    ...(params.mapVdisSrs === undefined ? {} : { mapVdisSrs: params.mapVdisSrs }),
  } as unknown as TaskInputOf<'backup.restore'>
}

/**
 * One `backup.run` task: resolves settings (defaults < config < settings[''] < settings[scheduleId] <
 * settings[vmUuid], XO's precedence), connects to the XAPI(s), opens the target remotes, backs the VMs
 * up `concurrency` at a time (vm-backup.ts) with `nRetriesVmBackupFailures` retries each, under the
 * run's `timeout` and the caller's cancel signal, and reports the XO task log as it goes.
 *
 * The returned summary is the root task; its status is the truth: `failure` as soon as one VM failed,
 * one target failed for a VM (the VM's backup is then on the other targets; the target's export subtask
 * ended in failure and the root's `result.error` names each), or every target could not be opened;
 * `interrupted` on cancel or timeout, else `success`.
 */
import { BackupProxyError, CancelledError, TaskInvalidError, TimeoutError, serializeError, toError, type JsonValue } from '../common/errors.js'
import { silentLogger, type Logger } from '../common/log.js'
import type { BackupSettings } from '../config/schema.js'
import type { BackupRunTask, JobSettings, TaskRemote, TaskXapi } from '../queue/tasks.js'
import { createRemote, optionsFromUrl, parseRemoteUrl } from '../remotes/index.js'
import type { RemoteOptions } from '../remotes/url-types.js'
import { mapSettled } from './concurrency.js'
import type { BackupXapi, DiskExporter, RemoteMetricsHook } from './ports.js'
import { attachTaskLog, createTaskLog, type Task, type TaskLogEvent, type TaskSummary } from './task-log.js'
import { backupVm, type RunTarget, type VmBackupContext, type VmBackupResult, type VmSettings } from './vm-backup.js'
import { closeInBackground } from './xapi-closes.js'
import { XapiClient } from '../xapi/client.js'
import { backupXapi } from './xapi-adapter.js'
import { inlineImporter, type DiskImporter } from './disk-import.js'
import { healthCheckAfterBackup, healthCheckSettingsOf } from './health-check.js'
import { selectVms } from './smart-mode.js'
import type { SrTarget } from './replication.js'
import type { XvaExporter } from './xva-export.js'

interface RunProgress {
  vmsTotal: number
  vmsDone: number
  /** bytes read from XAPI so far, all VMs */
  readBytes: number
}

interface XapiConnection {
  xapi: BackupXapi
  /** the client behind `xapi`, when there is one (health checks restore through it) */
  client?: XapiClient
  close(): Promise<void>
}

interface BackupRunEnv {
  /** the proxy's `backup` config section (defaults of every setting) */
  defaults: BackupSettings
  exporter: DiskExporter
  /** full backups' XVA transfer (default: on this thread) */
  xvaExporter?: XvaExporter
  /** set on a retried queue job: its enqueue time (ms); a VM an earlier attempt backed up is not backed up twice */
  earlierAttemptsSince?: number
  signal: AbortSignal
  emit?: (event: TaskLogEvent) => void
  progress?: (p: RunProgress) => void
  log?: Logger
  /** attach the run's tasks under this existing task (the job runner's root) instead of a new root */
  parentTaskId?: string
  /** default: XapiClient.connect */
  connectXapi?: (x: TaskXapi, signal: AbortSignal) => Promise<XapiConnection>
  /**
   * Metrics of the remotes this run opens on the main thread (metadata, retention): attached before
   * `open()`, so `remote_up` tells whether each target could be opened. The disks' remotes, opened in
   * the stream threads, report through the exporter's own metrics.
   */
  remoteMetrics?: RemoteMetricsHook
  /** disk imports of health checks (default: on this thread; a proxy passes the stream pool's) */
  importer?: DiskImporter
}

interface EffectiveSettings extends VmSettings {
  concurrency: number
  timeoutMs: number
  nRetriesVmBackupFailures: number
  /** replicas kept per target SR (XO's copyRetention; 0: the job's SRs get none, as XO) */
  copyRetention: number
}

function merge(defaults: BackupSettings, layers: readonly (JobSettings | undefined)[]): EffectiveSettings {
  const out: EffectiveSettings = {
    concurrency: defaults.concurrency,
    diskPerVmConcurrency: defaults.diskPerVmConcurrency,
    exportRetention: defaults.exportRetention,
    snapshotRetention: defaults.snapshotRetention,
    fullInterval: defaults.fullInterval,
    maxExportRateBytesPerSecond: defaults.maxExportRate,
    exportInactivityTimeoutMs: defaults.exportInactivityTimeoutMs,
    compression: defaults.compression,
    vhdDirectoryCompression: defaults.vhdDirectoryCompression,
    xvaChecksum: defaults.xvaChecksum,
    checkpointSnapshot: defaults.checkpointSnapshot,
    timeoutMs: defaults.timeoutMs,
    nRetriesVmBackupFailures: defaults.nRetriesVmBackupFailures,
    copyRetention: 0,
    preferNbd: defaults.preferNbd,
    nbdConcurrency: defaults.nbdConcurrency,
    cbtDestroySnapshotData: defaults.cbtDestroySnapshotData,
  }
  for (const s of layers) {
    if (s === undefined) continue
    if (s.concurrency !== undefined) out.concurrency = s.concurrency
    if (s.diskPerVmConcurrency !== undefined) out.diskPerVmConcurrency = s.diskPerVmConcurrency
    if (s.exportRetention !== undefined) out.exportRetention = s.exportRetention
    if (s.snapshotRetention !== undefined) out.snapshotRetention = s.snapshotRetention
    if (s.fullInterval !== undefined) out.fullInterval = s.fullInterval
    if (s.maxExportRate !== undefined) out.maxExportRateBytesPerSecond = s.maxExportRate
    if (s.compression !== undefined) out.compression = s.compression
    if (s.checkpointSnapshot !== undefined) out.checkpointSnapshot = s.checkpointSnapshot
    if (s.timeout !== undefined) out.timeoutMs = s.timeout
    if (s.nRetriesVmBackupFailures !== undefined) out.nRetriesVmBackupFailures = s.nRetriesVmBackupFailures
    if (s.copyRetention !== undefined) out.copyRetention = s.copyRetention
    if (s.preferNbd !== undefined) out.preferNbd = s.preferNbd
    if (s.nbdConcurrency !== undefined) out.nbdConcurrency = s.nbdConcurrency
    if (s.cbtDestroySnapshotData !== undefined) out.cbtDestroySnapshotData = s.cbtDestroySnapshotData
  }
  return out
}

/** Settings of one VM of a run (XO's precedence). */
function effectiveSettings(defaults: BackupSettings, task: BackupRunTask, vmUuid?: string): EffectiveSettings {
  const s = task.job.settings
  const out = merge(defaults, [s[''], s[task.schedule.id], vmUuid === undefined ? undefined : s[vmUuid]])
  // XO's full backups read the job's own `compression` (FullXapi: this.job.compression)
  const jobCompression = (task.job as { compression?: unknown }).compression
  if (jobCompression === '' || jobCompression === 'native' || jobCompression === 'zstd') out.compression = jobCompression
  return out
}

/** True when the job's `vms` is an XO smart-mode pattern (resolved against XAPI at run time). */
function isSmartMode(task: BackupRunTask): boolean {
  return (task.job.vms as { uuid?: unknown }).uuid === undefined
}

function vmUuidsOf(task: BackupRunTask): string[] {
  const vms = task.job.vms as { uuid?: string | string[] | { __or: string[] }; type?: unknown }
  if (vms.uuid === undefined) {
    throw new TaskInvalidError('job.vms: a smart-mode pattern is resolved against XAPI when the run starts (resolveVmUuids)', { fields: { field: 'job.vms' } })
  }
  const u = vms.uuid
  return [...new Set(typeof u === 'string' ? [u] : Array.isArray(u) ? u : u.__or)]
}

/** The run's VMs: the listed uuids, or the smart-mode pattern resolved against the connected pools. */
async function resolveVmUuids(task: BackupRunTask, connections: readonly XapiConnection[]): Promise<string[]> {
  if (!isSmartMode(task)) return vmUuidsOf(task)
  const { type: _type, ...pattern } = task.job.vms as Record<string, JsonValue>
  const vms: Record<string, unknown>[] = []
  for (const c of connections) {
    if (c.xapi.listVmObjects === undefined) throw new BackupProxyError('E_NOT_AVAILABLE', 'this XAPI connection cannot list VMs: smart-mode jobs need it')
    vms.push(...(await c.xapi.listVmObjects()))
  }
  return selectVms(pattern, vms, task.job.id)
}

async function defaultConnect(x: TaskXapi, signal: AbortSignal): Promise<XapiConnection> {
  const client = await XapiClient.connect({ url: x.url, user: x.credentials.username, password: x.credentials.password, allowUnauthorized: x.allowUnauthorized, signal })
  return { xapi: backupXapi(client), client, close: () => client.close() }
}

function vmResultJson(r: VmBackupResult): JsonValue {
  return { timestamp: r.timestamp, full: r.full, sizeBytes: r.sizeBytes, readBytes: r.readBytes, durationMs: Math.round(r.durationMs), succeeded: r.succeeded, failed: r.failed }
}

/** What a run opened, released when it ends whatever happened. */
interface RunResources {
  connections: XapiConnection[]
  targets: RunTarget[]
  detachMetrics: (() => void)[]
}

/** What the steps of a run share once its XAPIs and targets are open. */
interface RunContext {
  task: BackupRunTask
  env: BackupRunEnv
  root: Task
  signal: AbortSignal
  log: Logger
  connections: readonly XapiConnection[]
  targets: readonly RunTarget[]
  srTargets: readonly { id: string; client: XapiClient }[]
  progress: RunProgressTracker
}

/** The run's signal: the caller's cancel, or the run's timeout (0: none); `dispose` detaches both. */
function runSignal(caller: AbortSignal, timeoutMs: number): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController()
  const onAbort = () => controller.abort(new CancelledError('the backup run was cancelled', { cause: caller.reason }))
  if (caller.aborted) onAbort()
  caller.addEventListener('abort', onAbort, { once: true })
  const timer = timeoutMs > 0 ? setTimeout(() => controller.abort(new TimeoutError(`the backup run exceeded its timeout of ${timeoutMs} ms`)), timeoutMs) : undefined
  return {
    signal: controller.signal,
    dispose: () => {
      clearTimeout(timer)
      caller.removeEventListener('abort', onAbort)
    },
  }
}

/** Connects to every XAPI of the task (one that cannot be reached is a warning); throws when none can. */
async function connectXapis(task: BackupRunTask, env: BackupRunEnv, signal: AbortSignal, root: Task, into: XapiConnection[]): Promise<Map<string, XapiConnection>> {
  const connect = env.connectXapi ?? defaultConnect
  const byId = new Map<string, XapiConnection>()
  for (const [id, x] of Object.entries(task.xapis)) {
    try {
      const c = await connect(x, signal)
      into.push(c)
      byId.set(id, c)
    } catch (error) {
      root.warning(`could not connect to XAPI ${id}`, { error: serializeError(error).message })
    }
  }
  if (into.length === 0) throw new BackupProxyError('E_XAPI', 'no XAPI of the task could be reached; check the pool address and credentials')
  return byId
}

interface RunProgressTracker {
  /** bytes read so far by one VM */
  onBytes: (vmUuid: string, readBytes: number) => void
  vmDone: () => void
}

/** The run's progress, reported to `env.progress` on every change. */
function trackProgress(env: BackupRunEnv, vmsTotal: number): RunProgressTracker {
  const progress: RunProgress = { vmsTotal, vmsDone: 0, readBytes: 0 }
  const readByVm = new Map<string, number>()
  return {
    onBytes: (vm, bytes) => {
      readByVm.set(vm, bytes)
      progress.readBytes = [...readByVm.values()].reduce((a, b) => a + b, 0)
      env.progress?.({ ...progress })
    },
    vmDone: () => {
      progress.vmsDone++
      env.progress?.({ ...progress })
    },
  }
}

/** The context of one attempt at one VM's backup. */
function vmContext(run: RunContext, xapi: BackupXapi, settings: EffectiveSettings): VmBackupContext {
  const { task, env } = run
  return {
    jobId: task.job.id,
    jobName: task.job.name,
    scheduleId: task.schedule.id,
    mode: task.job.mode,
    targets: run.targets,
    srTargets: withCopyRetention(run.srTargets, task, settings),
    xapi,
    exporter: env.exporter,
    ...(env.xvaExporter === undefined ? {} : { xvaExporter: env.xvaExporter }),
    ...(env.earlierAttemptsSince === undefined ? {} : { earlierAttemptsSince: env.earlierAttemptsSince }),
    signal: run.signal,
    log: run.log,
    onBytes: run.progress.onBytes,
  }
}

/** XO's health check of the VM's new backup, when the job's settings ask for one (health-check.ts). */
async function healthCheck(run: RunContext, conn: XapiConnection, vmUuid: string, result: VmBackupResult, vmTask: Task): Promise<void> {
  const s = run.task.job.settings
  const vmTags = (await conn.xapi.getVm(vmUuid)).record.tags
  await healthCheckAfterBackup({
    settings: healthCheckSettingsOf([s[''], s[run.task.schedule.id], s[vmUuid]]),
    xapi: conn.client,
    vmUuid,
    vmTags: Array.isArray(vmTags) ? vmTags.map(String) : [],
    timestamp: result.timestamp,
    targets: run.targets.filter((t) => result.succeeded.includes(t.id)),
    importer: run.env.importer ?? inlineImporter,
    signal: run.signal,
    log: vmTask,
  })
}

/** One VM of the run: its backup (retried as the settings say), then its health check; its own task in the log. */
async function backupRunVm(run: RunContext, vmUuid: string): Promise<VmBackupResult> {
  const { signal } = run
  const settings = effectiveSettings(run.env.defaults, run.task, vmUuid)
  // as XO's VmsXapi runner: the VM's name in the task's data once the VM is found
  const found = await findXapi(run.connections, vmUuid).then((f) => ({ ...f, error: undefined }), (error: unknown) => ({ error, conn: undefined, nameLabel: undefined }))
  const vmTask = run.root.child('backup VM', { type: 'VM', id: vmUuid, ...(found.nameLabel === undefined ? {} : { name_label: found.nameLabel }) })
  try {
    if (found.conn === undefined) throw found.error
    const conn = found.conn
    const result = await withRetries(settings.nRetriesVmBackupFailures, vmTask, signal, () => backupVm(vmUuid, vmContext(run, conn.xapi, settings), settings, vmTask))
    await healthCheck(run, conn, vmUuid, result, vmTask)
    vmTask.end('success', vmResultJson(result))
    return result
  } catch (error) {
    vmTask.fail(signal.aborted ? (signal.reason as Error) : error)
    run.log.warn({ vm: vmUuid, err: error }, 'VM backup failed')
    throw error
  } finally {
    run.progress.vmDone()
  }
}

/** Ends the root task with the run's figures: `failure` when a target failed for a VM, else as its VMs went. */
function endRun(root: Task, vmUuids: readonly string[], results: readonly PromiseSettledResult<VmBackupResult>[]): void {
  const ok = results.filter((r): r is PromiseFulfilledResult<VmBackupResult> => r.status === 'fulfilled').map((r) => r.value)
  // a target that failed for a VM (its export subtask ended in failure) fails the run, even though the
  // VM's backup is on the other targets: the operator must hear of it (status, exit code, metrics)
  const failedTargets = ok.flatMap((r) => r.failed.map((id) => `VM ${r.vmUuid} on ${id}`))
  root.end(failedTargets.length > 0 ? 'failure' : undefined, {
    vms: vmUuids.length,
    succeeded: ok.length,
    sizeBytes: ok.reduce((a, r) => a + r.sizeBytes, 0),
    readBytes: ok.reduce((a, r) => a + r.readBytes, 0),
    ...(failedTargets.length === 0
      ? {}
      : {
          failedTargets,
          error: serializeError(
            new BackupProxyError('E_BACKUP', `${failedTargets.length} target backup(s) failed (${failedTargets.join(', ')}); the other targets hold the backup: see the failed export tasks for why, fix the target, and the next run repairs it`),
          ) as unknown as JsonValue,
        }),
  })
}

/**
 * Releases what the run opened, in reverse order (errors ignored: the run's outcome is already decided):
 * remotes and metrics before the run returns, its XAPI connections in the background, as XO's backup
 * worker (xapi-closes.ts).
 */
async function release(held: RunResources): Promise<void> {
  await Promise.all(held.targets.map((t) => t.remote.close().catch(() => undefined)))
  for (const detach of held.detachMetrics) detach()
  closeInBackground(Promise.all(held.connections.map((c) => c.close().catch(() => undefined))).then(() => undefined))
}

export async function runBackup(task: BackupRunTask, env: BackupRunEnv): Promise<TaskSummary> {
  const log = env.log ?? silentLogger
  const runSettings = effectiveSettings(env.defaults, task)
  const data = { mode: task.job.mode, jobId: task.job.id, jobName: task.job.name, scheduleId: task.schedule.id }
  const emit = env.emit ?? (() => undefined)
  const root = env.parentTaskId === undefined ? createTaskLog('backup', data, emit) : attachTaskLog(env.parentTaskId, 'backup', emit)
  const { signal, dispose } = runSignal(env.signal, runSettings.timeoutMs)
  const held: RunResources = { connections: [], targets: [], detachMetrics: [] }
  try {
    const connectionById = await connectXapis(task, env, signal, root, held.connections)
    const vmUuids = await resolveVmUuids(task, held.connections)
    if (isSmartMode(task)) root.info(`smart mode: ${vmUuids.length} VM(s) match the job's pattern`, { vms: vmUuids })
    await openRemotes(task, env, root, held.targets, held.detachMetrics)
    const srTargets = srTargetsOf(task, held.connections, connectionById, root)
    if (held.targets.length === 0 && srTargets.length === 0) {
      throw new BackupProxyError('E_BACKUP', srUuidsOf(task).length === 0 ? 'none of the remotes of the task could be opened' : 'none of the remotes or SRs of the task could be used')
    }
    const run: RunContext = { task, env, root, signal, log, connections: held.connections, targets: held.targets, srTargets, progress: trackProgress(env, vmUuids.length) }
    const results = await mapSettled(vmUuids, runSettings.concurrency, (vmUuid) => backupRunVm(run, vmUuid))
    endRun(root, vmUuids, results)
  } catch (error) {
    root.fail(signal.aborted ? toError(signal.reason) : error)
  } finally {
    dispose()
    await release(held)
  }
  return root.summary()
}

/** A task remote's options: the URL's query options under the explicit ones, undefined keys dropped. */
export function remoteOptionsOf(r: TaskRemote): RemoteOptions {
  const merged: Record<string, unknown> = { ...optionsFromUrl(parseRemoteUrl(r.url)), ...(r.options ?? {}) }
  return Object.fromEntries(Object.entries(merged).filter(([, v]) => v !== undefined))
}

async function findXapi(connections: readonly XapiConnection[], vmUuid: string): Promise<{ conn: XapiConnection; nameLabel: string | undefined }> {
  let lastError: unknown
  for (const c of connections) {
    try {
      const vm = await c.xapi.getVm(vmUuid)
      return { conn: c, nameLabel: typeof vm.record.name_label === 'string' ? vm.record.name_label : undefined }
    } catch (error) {
      lastError = error
    }
  }
  throw new BackupProxyError('E_XAPI', `VM ${vmUuid} is on none of the task's pools`, { cause: lastError })
}

async function withRetries<T>(retries: number, task: Task, signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn()
    } catch (error) {
      if (signal.aborted || attempt >= retries) throw error
      task.warning(`attempt ${attempt + 1} failed, retrying (${retries - attempt} left)`, { error: serializeError(error).message })
    }
  }
}

/** Opens the task's remotes into `targets` (an unusable one is a warning and is skipped). */
async function openRemotes(task: BackupRunTask, env: BackupRunEnv, root: Task, targets: RunTarget[], detachMetrics: (() => void)[]): Promise<void> {
  for (const [id, r] of Object.entries(task.remotes)) {
    const options = remoteOptionsOf(r)
    const remote = createRemote(r.url, options)
    if (env.remoteMetrics !== undefined) detachMetrics.push(env.remoteMetrics(remote, id))
    try {
      await remote.open()
      targets.push({ id, url: r.url, options, remote })
    } catch (error) {
      root.warning(`remote ${id} (${remote.displayUrl}) is unusable and is skipped`, { error: serializeError(error).message })
      await remote.close().catch(() => undefined)
    }
  }
}

/** The job's SRs (XO's `srs`: `{id}` or `{id: {__or}}`). */
function srUuidsOf(task: BackupRunTask): string[] {
  const id = task.job.srs?.id
  return id === undefined ? [] : typeof id === 'string' ? [id] : [...new Set(id.__or)]
}

/** Each SR of the job on its pool (`recordToXapi`, else the first connected pool that has it); the others warned about. */
function srTargetsOf(task: BackupRunTask, connections: readonly XapiConnection[], byId: ReadonlyMap<string, XapiConnection>, root: Task): { id: string; client: XapiClient }[] {
  const out: { id: string; client: XapiClient }[] = []
  for (const uuid of srUuidsOf(task)) {
    const mapped = task.recordToXapi[uuid]
    const candidates = mapped === undefined ? connections : [byId.get(mapped)].filter((c): c is XapiConnection => c !== undefined)
    const client = candidates.map((c) => c.client).find((c) => c?.listSrs().some((sr) => sr.uuid === uuid) === true)
    if (client === undefined) root.warning(`SR ${uuid} is on none of the task's connected pools and is skipped`)
    else out.push({ id: uuid, client })
  }
  return out
}

/** The SR targets of one VM: each with its copyRetention (the SR's own setting over the VM's); 0 = none, as XO. */
function withCopyRetention(srs: readonly { id: string; client: XapiClient }[], task: BackupRunTask, settings: EffectiveSettings): SrTarget[] {
  return srs.map((t) => ({ ...t, copyRetention: task.job.settings[t.id]?.copyRetention ?? settings.copyRetention })).filter((t) => t.copyRetention > 0)
}

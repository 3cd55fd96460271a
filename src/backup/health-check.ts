/**
 * Health check of a new backup (XO's `healthCheckSr` / `healthCheckVmsWithTags` / `healthCheckTimeout`
 * settings, HealthCheckVmBackup): the backup just written to a remote is restored as a VM on the
 * health-check SR (tagged `xo:no-bak=Health Check` so no job backs it up), its VIFs removed (the copy
 * must not reach the production network), started, and the check passes once the guest reports its
 * tools (guest metrics with `PV_drivers_detected`) within the timeout. A VM tagged
 * `xo-backup-health-check-xenstore` must also run XO's health-check script: `vm-data/xo-backup-health-check`
 * is set to `planned` in its xenstore before start and the guest answers `success` or `failure` (with
 * `vm-data/xo-backup-health-check-error`). The restored VM and its disks are destroyed whatever happened.
 *
 * Which VMs: none without `healthCheckSr`; never one tagged `xo:no-health-check[=reason]`; with
 * `healthCheckVmsWithTags` non-empty, only VMs having one of those tags (the others get an info).
 */
import { BackupProxyError, TimeoutError, serializeError, type JsonValue } from '../common/errors.js'
import type { Remote } from '../remotes/remote.js'
import type { RemoteOptions } from '../remotes/url-types.js'
import type { XapiClient } from '../xapi/client.js'
import type { DiskImporter } from './disk-import.js'
import { importVmBackup, type RestoreLog } from './import-vm-backup.js'
import { metadataPath } from './layout.js'

const HEALTH_CHECK_TAG = 'xo:no-bak=Health Check'
const XENSTORE_SCRIPT_TAG = 'xo-backup-health-check-xenstore'
const XENSTORE_KEY = 'vm-data/xo-backup-health-check'
const NULL_REF = 'OpaqueRef:NULL'

interface HealthCheckSettings {
  healthCheckSr?: string
  healthCheckVmsWithTags: string[]
  healthCheckTimeoutMs: number
}

/** Whether a VM with these tags is health-checked; the reason when it is not. */
function healthCheckWanted(settings: HealthCheckSettings, tags: readonly string[]): { wanted: boolean; reason?: string } {
  if (settings.healthCheckSr === undefined) return { wanted: false, reason: 'no healthCheckSr' }
  if (tags.some((t) => t.startsWith('xo:no-health-check'))) return { wanted: false, reason: "This VM doesn't match the health check's tags for this schedule" }
  const { healthCheckVmsWithTags: wanted } = settings
  if (wanted.length !== 0 && !wanted.some((t) => tags.includes(t))) return { wanted: false, reason: "This VM doesn't match the health check's tags for this schedule" }
  return { wanted: true }
}

/** XO's duration settings: a number of ms, or `<n>ms|s|m|h|d` (`10m`). */
function parseDurationMs(value: unknown, field: string): number {
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return value
  const m = typeof value === 'string' ? /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(value.trim()) : null
  if (m === null) throw new BackupProxyError('E_TASK_INVALID', `${field}: ${JSON.stringify(value)} is not a duration (milliseconds, or e.g. "30s", "10m")`, { fields: { field } })
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 'ms') as 'ms']
  return Number(m[1]) * unit
}

interface HealthCheckOptions {
  xapi: XapiClient
  remote: Remote
  remoteSpec: { url: string; options: RemoteOptions }
  remoteName: string
  metadataPath: string
  srUuid: string
  timeoutMs: number
  importer: DiskImporter
  signal: AbortSignal
  log: RestoreLog
}

/** Restores, starts and checks the backup; throws with the reason when the check fails. Always cleans up. */
async function healthCheckVmBackup(o: HealthCheckOptions): Promise<{ restoredVmUuid: string; durationMs: number }> {
  const t0 = performance.now()
  const restored = await importVmBackup({
    remote: o.remote,
    remoteSpec: o.remoteSpec,
    remoteName: o.remoteName,
    metadataPath: o.metadataPath,
    xapi: o.xapi,
    srUuid: o.srUuid,
    additionalVmTag: HEALTH_CHECK_TAG,
    importer: o.importer,
    signal: o.signal,
    log: o.log,
  })
  const vm = await o.xapi.waitObject('VM', restored.restoredVmUuid, { signal: o.signal })
  try {
    await startAndWait(o, vm.$ref, vm.uuid, vm.tags.includes(XENSTORE_SCRIPT_TAG), t0)
    return { restoredVmUuid: vm.uuid, durationMs: performance.now() - t0 }
  } finally {
    await destroyVmAndDisks(o.xapi, vm.$ref, o.log)
  }
}

async function startAndWait(o: HealthCheckOptions, vmRef: string, vmUuid: string, waitForScript: boolean, t0: number): Promise<void> {
  const x = o.xapi
  const remaining = (): number => Math.max(1, o.timeoutMs - (performance.now() - t0))
  for (const vif of x.get('VM', vmRef).VIFs) await x.callAsync('VIF.destroy', vif)
  if (waitForScript) await x.call('VM.set_xenstore_data', vmRef, { [XENSTORE_KEY]: 'planned' })
  await x.callAsync('VM.start', vmRef, false, false)
  const timeout = (what: string) => (error: unknown): never => {
    // a failed check, not an interrupted run: E_BACKUP, the timeout as its cause
    if (error instanceof TimeoutError) {
      throw new BackupProxyError('E_BACKUP', `health check of VM ${vmUuid}: ${what} within ${Math.round(o.timeoutMs / 1000)} s (healthCheckTimeout)`, { cause: error, fields: { reason: 'timeout' } })
    }
    throw error
  }
  await x.waitObject('VM', vmRef, { predicate: (v) => v.power_state === 'Running', timeoutMs: remaining(), signal: o.signal }).catch(timeout('not running'))
  await x
    .waitObject('VM', vmRef, {
      predicate: (v) => typeof v.guest_metrics === 'string' && v.guest_metrics !== NULL_REF && toolsDetected(x, v.guest_metrics),
      timeoutMs: remaining(),
      signal: o.signal,
    })
    .catch(timeout('timeout reached while waiting for the VM to report the driver version through the Xen tools. Please check or update the Xen tools'))
  if (!waitForScript) return
  const done = await x
    .waitObject('VM', vmRef, {
      predicate: (v) => ['success', 'failure'].includes((v.xenstore_data as Record<string, string> | undefined)?.[XENSTORE_KEY] ?? ''),
      timeoutMs: remaining(),
      signal: o.signal,
    })
    .catch(timeout('timeout reached while waiting for the VM to report the startup script execution'))
  const data = done.xenstore_data as Record<string, string>
  if (data[XENSTORE_KEY] !== 'success') {
    const message = data[`${XENSTORE_KEY}-error`]
    throw new BackupProxyError('E_BACKUP', `Backup health check script failed${message === undefined ? '' : ` with message ${message}`} for VM ${vmUuid}`)
  }
  o.log.child('Backup health check script successfully executed').end('success')
}

function toolsDetected(x: XapiClient, gmRef: string): boolean {
  try {
    return x.get('VM_guest_metrics', gmRef).PV_drivers_detected
  } catch {
    return false // not in the cache yet: the next event re-checks
  }
}

/** Hard shutdown if running, `VM.destroy`, then its VDIs (XO's VM_destroy); failures are warnings. */
export async function destroyVmAndDisks(x: XapiClient, vmRef: string, log: RestoreLog): Promise<void> {
  const warn = (what: string) => (e: unknown) => log.warning(`could not remove ${what} of the health check: remove it by hand`, { error: serializeError(e).message })
  const vdis = x.vmDisks(vmRef).map((d) => d.vdi.$ref)
  const state = await x.call('VM.get_power_state', vmRef).catch(() => 'Halted')
  if (state === 'Running') await x.callAsync('VM.hard_shutdown', vmRef).catch(warn(`VM ${vmRef} (shutdown)`))
  await x.callAsync('VM.destroy', vmRef).catch(warn(`VM ${vmRef}`))
  for (const vdi of vdis) await x.destroyVdi(vdi).catch(warn(`VDI ${vdi}`))
}

/** The job settings of a health check (XO's names), validated. */
export function healthCheckSettingsOf(layers: readonly (Record<string, unknown> | undefined)[]): HealthCheckSettings {
  const out: HealthCheckSettings = { healthCheckVmsWithTags: [], healthCheckTimeoutMs: 10 * 60_000 }
  for (const s of layers) {
    if (s === undefined) continue
    const { healthCheckSr: sr, healthCheckVmsWithTags: tags, healthCheckTimeout: timeout } = s
    if (sr !== undefined && sr !== null && sr !== '') {
      if (typeof sr !== 'string') throw new BackupProxyError('E_TASK_INVALID', 'healthCheckSr must be the uuid of an SR', { fields: { field: 'healthCheckSr' } })
      out.healthCheckSr = sr
    }
    if (tags !== undefined) {
      if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) throw new BackupProxyError('E_TASK_INVALID', 'healthCheckVmsWithTags must be a list of tags', { fields: { field: 'healthCheckVmsWithTags' } })
      out.healthCheckVmsWithTags = tags
    }
    if (timeout !== undefined) out.healthCheckTimeoutMs = parseDurationMs(timeout, 'healthCheckTimeout')
  }
  return out
}

interface AfterBackupOptions {
  settings: HealthCheckSettings
  /** the pool's client; undefined when the run was given another XAPI port (no health check possible) */
  xapi: XapiClient | undefined
  vmUuid: string
  vmTags: string[]
  timestamp: string
  /** the targets the backup succeeded on */
  targets: { id: string; url: string; options: RemoteOptions; remote: Remote }[]
  importer: DiskImporter
  signal: AbortSignal
  log: RestoreLog
}

/**
 * After a VM's backup: one `health check` task per target the backup reached (XO checks each writer).
 * Throws when every check failed (XO: all writers failed), with the first reason; a single failure among
 * several is a failed subtask only.
 */
export async function healthCheckAfterBackup(o: AfterBackupOptions): Promise<void> {
  const { wanted, reason } = healthCheckWanted(o.settings, o.vmTags)
  if (!wanted) {
    if (o.settings.healthCheckSr !== undefined) {
      const t = o.log.child('health check')
      t.info(reason ?? '')
      t.end('success')
    }
    return
  }
  if (o.xapi === undefined) {
    o.log.warning('health check skipped: this run has no XAPI client to restore with')
    return
  }
  const errors: unknown[] = []
  for (const t of o.targets) {
    const task = o.log.child('health check', { remote: t.id })
    try {
      const r = await healthCheckVmBackup({
        xapi: o.xapi, remote: t.remote, remoteSpec: { url: t.url, options: t.options }, remoteName: t.id, metadataPath: metadataPath(o.vmUuid, o.timestamp),
        srUuid: o.settings.healthCheckSr!, timeoutMs: o.settings.healthCheckTimeoutMs, importer: o.importer, signal: o.signal, log: task,
      })
      task.end('success', { restoredVmUuid: r.restoredVmUuid, durationMs: Math.round(r.durationMs) })
    } catch (error) {
      task.end(o.signal.aborted ? 'interrupted' : 'failure', serializeError(error) as unknown as JsonValue)
      errors.push(error)
    }
  }
  if (errors.length > 0 && errors.length === o.targets.length) throw errors[0]
}

/**
 * Steps 3 and 4 of one VM's backup (vm-backup.ts) on its remote targets: export each disk of the new
 * snapshot once through the disk exporter (a pool thread), written to every live target at once — a
 * delta against the base where the target holds the base's chain in the same format, else a full —
 * then, on each target that got every disk, publish: the metadata JSON (last: the backup now exists),
 * cache.json.gz, then retention (merge, delete).
 *
 * A target that fails a disk (or its publication) is dropped for this VM: warning and failed export
 * task, its files of this backup removed. When no target is left (or on cancel), every target's files
 * of this backup go and the VM fails with AllTargetsFailedError. Task log: export (one per target) →
 * transfer, merge; as XO.
 */
import { BackupProxyError, serializeError, toError, type JsonValue } from '../common/errors.js'
import { AllTargetsFailedError } from '../common/fan-out.js'
import { applyRetention } from './apply-retention.js'
import type { BackupSnapshot } from './base-choice.js'
import { updateCache, writeMetadata, type CatalogEntry } from './catalog.js'
import { mapSettled } from './concurrency.js'
import { aliasDataPath, isAliasPath, resolveVhdPath, sourceVdiUuid, vdiDir, vmDir } from './layout.js'
import { isCbtBase, planDiskRead, type NbdSettings } from './nbd-plan.js'
import type { DiskExportResult, DiskTarget, XapiDisk, XapiObject } from './ports.js'
import type { Task } from './task-log.js'
import type { RunTarget, VmBackupContext, VmBackupResult, VmSettings } from './vm-backup.js'
import { buildMetadata, usesVhdDirectory, type RunIds } from './xo-records.js'

export function nbdSettingsOf(s: VmSettings): NbdSettings {
  return { preferNbd: s.preferNbd ?? false, nbdConcurrency: s.nbdConcurrency ?? 1, cbtDestroySnapshotData: s.cbtDestroySnapshotData ?? false, snapshotRetention: s.snapshotRetention }
}

/** What exporting one VM's snapshot needs. */
interface VmExportInput {
  vmUuid: string
  /** the VM and its new snapshot */
  vm: XapiObject
  snapshot: XapiObject
  /** the snapshot the backup is a delta against (base-choice.ts); undefined: a full */
  base: BackupSnapshot | undefined
  /** target id → this job's backups of the VM on it */
  holdings: ReadonlyMap<string, CatalogEntry[]>
  ctx: VmBackupContext
  run: RunIds
  settings: VmSettings
  task: Task
}

/** Exports the snapshot's disks to the remote targets and publishes the backup on each that got them all. */
export async function exportAndPublish(input: VmExportInput): Promise<Omit<VmBackupResult, 'durationMs'>> {
  const { xapi } = input.ctx
  const base = input.base
  const disks = await xapi.listDisks(input.snapshot.ref)
  const baseDisks = base === undefined ? [] : isCbtBase(base) ? base.cbtDisks : await xapi.listDisks(base.ref)
  const exp = new VmExport(input, disks, baseDisks)
  const settled = await mapSettled(disks, input.settings.diskPerVmConcurrency, (disk) => exp.exportDisk(disk))
  const diskError = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected')
  if (diskError !== undefined || input.ctx.signal.aborted) await exp.abandon(diskError?.reason)
  return exp.publish()
}

/** One VM's export in progress: its disks, what each target got, the targets dropped so far. */
class VmExport {
  private readonly vmUuid: string
  private readonly targets: readonly RunTarget[]
  /** target id → the base's backup on it */
  private readonly baseBackupByTarget = new Map<string, CatalogEntry>()
  private readonly exportTasks: Map<string, Task>
  private readonly transferTasks: Map<string, Task>
  private readonly failedTargets = new Map<string, Error>()
  /** snapshot VDI ref → source VDI uuid */
  private readonly vhdSource: Record<string, string> = {}
  private readonly isVhdDifferencing: Record<string, boolean> = {}
  /** snapshot VDI ref → uuid of the base VDI of its delta */
  private readonly baseVdiOf: Record<string, string> = {}
  private sizeBytes = 0
  private readBytes = 0
  private readonly readByDisk = new Map<string, number>()
  /** target → remote paths written in this backup */
  private readonly written = new Map<string, string[]>()

  constructor(
    private readonly input: VmExportInput,
    private readonly disks: readonly XapiDisk[],
    private readonly baseDisks: readonly XapiDisk[],
  ) {
    const { ctx, base, holdings, task } = input
    this.vmUuid = input.vmUuid
    this.targets = ctx.targets
    if (base !== undefined) {
      for (const t of ctx.targets) {
        const b = (holdings.get(t.id) ?? []).find((e) => e.metadata.vmSnapshot.uuid === base.uuid)
        if (b !== undefined) this.baseBackupByTarget.set(t.id, b)
      }
    }
    this.exportTasks = new Map(ctx.targets.map((t) => [t.id, task.child('export', { type: 'remote', id: t.id, isFull: base === undefined })]))
    this.transferTasks = new Map([...this.exportTasks].map(([id, et]) => [id, et.child('transfer')]))
  }

  private dropTarget(id: string, error: Error): void {
    if (this.failedTargets.has(id)) return
    this.failedTargets.set(id, error)
    this.exportTasks.get(id)?.warning(`target ${id} dropped: ${error.message}`)
    this.transferTasks.get(id)?.fail(error)
    this.exportTasks.get(id)?.fail(error)
  }

  private allFailed(): AllTargetsFailedError {
    return new AllTargetsFailedError([...this.failedTargets].map(([id, error]) => ({ id, error })), `VM ${this.vmUuid}`)
  }

  /** One disk to every live target: a delta where every live target holds its parent (and the read allows one). */
  async exportDisk(disk: XapiDisk): Promise<void> {
    const { ctx, settings, task } = this.input
    const baseDisk = this.baseDisks.find((d) => d.sourceVdiUuid === disk.sourceVdiUuid)
    // a delta needs the parent on every live target
    const live = this.targets.filter((t) => !this.failedTargets.has(t.id))
    if (live.length === 0) throw this.allFailed()
    const parents = baseDisk === undefined ? new Map<string, { path: string; uuid: string }>() : this.parentsOf(disk, baseDisk, live)
    // NBD and CBT (nbd-plan.ts): may turn the delta into a full when the base has no data left
    const read = await planDiskRead(ctx.xapi, nbdSettingsOf(settings), disk, baseDisk !== undefined && parents.size === live.length ? baseDisk : undefined)
    for (const n of read.notes) task[n.level](n.message)
    const delta = baseDisk !== undefined && read.delta ? baseDisk : undefined
    const targets = this.diskTargets(disk, live, delta === undefined ? undefined : parents)
    const descriptor = await ctx.xapi.exportDescriptor(disk.vdi.ref, delta === undefined ? {} : { baseRef: delta.vdi.ref })
    const r = await ctx.exporter(
      {
        descriptor,
        vdiUuid: disk.vdi.uuid,
        ...(delta === undefined ? {} : { baseVdiUuid: delta.vdi.uuid }),
        targets,
        maxExportRateBytesPerSecond: settings.maxExportRateBytesPerSecond,
        ...(settings.exportInactivityTimeoutMs === undefined ? {} : { exportInactivityTimeoutMs: settings.exportInactivityTimeoutMs }),
        ...(read.nbd === undefined ? {} : { nbd: read.nbd }),
      },
      { signal: ctx.signal, onProgress: (p) => this.onDiskProgress(disk, p.readBytes) },
    )
    this.recordDisk(disk, r, targets, delta)
  }

  /** The base's VHD of this disk on each live target whose chain is in the format the target writes now. */
  private parentsOf(disk: XapiDisk, baseDisk: XapiDisk, live: readonly RunTarget[]): Map<string, { path: string; uuid: string }> {
    const parents = new Map<string, { path: string; uuid: string }>()
    for (const t of live) {
      const b = this.baseBackupByTarget.get(t.id)
      const ref = b === undefined ? undefined : Object.keys(b.metadata.vhds).find((r) => sourceVdiUuid(b.metadata, r) === disk.sourceVdiUuid)
      const path = ref === undefined ? undefined : resolveVhdPath(this.vmUuid, b!.metadata.vhds[ref]!)
      // as XO's isMergeableParent: a chain stays all VhdFile or all VhdDirectory (else a full)
      if (path !== undefined && isAliasPath(path) === usesVhdDirectory(t)) parents.set(t.id, { path, uuid: baseDisk.vdi.uuid })
      else if (path !== undefined) {
        this.input.task.info(`full backup of disk ${disk.sourceVdiUuid} on ${t.id}: its chain is ${isAliasPath(path) ? 'VhdDirectory' : 'VhdFile'}, this target now writes ${usesVhdDirectory(t) ? 'VhdDirectory' : 'VhdFile'}`)
      }
    }
    return parents
  }

  /** Where each live target writes the disk; with `parents`, as a delta on them. */
  private diskTargets(disk: XapiDisk, live: readonly RunTarget[], parents: ReadonlyMap<string, { path: string; uuid: string }> | undefined): DiskTarget[] {
    const { ctx, run, settings } = this.input
    return live.map((t) => ({
      id: t.id,
      url: t.url,
      options: t.options,
      path: `${vdiDir(this.vmUuid, ctx.jobId, disk.sourceVdiUuid)}/${run.timestamp}${usesVhdDirectory(t) ? '.alias.vhd' : '.vhd'}`,
      directory: usesVhdDirectory(t),
      compression: settings.vhdDirectoryCompression,
      ...(parents === undefined ? {} : { parent: parents.get(t.id)! }),
    }))
  }

  private onDiskProgress(disk: XapiDisk, readBytes: number): void {
    this.readByDisk.set(disk.vdi.ref, readBytes)
    let sum = 0
    for (const v of this.readByDisk.values()) sum += v
    this.input.ctx.onBytes?.(this.vmUuid, sum, undefined)
  }

  /** The exporter's result: targets that failed dropped, paths written, what the metadata needs, the task log. */
  private recordDisk(disk: XapiDisk, r: DiskExportResult, targets: readonly DiskTarget[], delta: XapiDisk | undefined): void {
    const task = this.input.task
    for (const f of r.failed) this.dropTarget(f.id, new BackupProxyError('E_BACKUP', `disk ${disk.sourceVdiUuid}: ${f.error.message}`, { fields: { disk: disk.sourceVdiUuid } }))
    for (const id of r.succeeded) {
      const t = targets.find((x) => x.id === id)!
      const list = this.written.get(id) ?? []
      list.push(t.path)
      this.written.set(id, list)
    }
    if (r.succeeded.length === 0) throw new BackupProxyError('E_BACKUP', `disk ${disk.sourceVdiUuid} could not be written to any target`)
    this.vhdSource[disk.vdi.ref] = disk.sourceVdiUuid
    this.isVhdDifferencing[disk.vdi.ref] = r.differencing
    if (delta !== undefined && r.differencing) this.baseVdiOf[disk.vdi.ref] = delta.vdi.uuid
    for (const w of r.warnings ?? []) task.warning(w)
    if (r.transport === 'nbd') task.info(`Transfer data using NBD (disk ${disk.sourceVdiUuid}, ${r.nbdConnections ?? 1} connections)`)
    this.sizeBytes += r.sizeBytes
    this.readBytes += r.readBytes
    task.info(`disk ${disk.sourceVdiUuid} exported`, { sizeBytes: r.sizeBytes, differencing: r.differencing, durationMs: Math.round(r.durationMs) })
  }

  /**
   * Every target is unusable for this backup (or it was cancelled): removes what was written, and the
   * directories it created if nothing else is in them; every target dropped; throws the reason.
   */
  async abandon(reason: unknown): Promise<never> {
    const { ctx, task } = this.input
    await removeWritten(this.targets, this.written, this.vmUuid, ctx.jobId, this.input.run.timestamp)
    await removeEmptyDirs(this.targets, this.vmUuid, ctx.jobId, this.disks, task)
    const error = ctx.signal.aborted ? toError(ctx.signal.reason) : toError(reason)
    for (const t of this.targets) this.dropTarget(t.id, error)
    throw error
  }

  /** Publishes on every target that got all disks (the others' files removed); the VM's result. */
  async publish(): Promise<Omit<VmBackupResult, 'durationMs'>> {
    const succeeded: string[] = []
    await Promise.all(this.targets.map(async (t) => {
      if (await this.publishOn(t)) succeeded.push(t.id)
    }))
    if (succeeded.length === 0) throw this.allFailed()
    const { base, run } = this.input
    // a full when no disk is a delta (the NBD fallback of a delta on a data-destroyed base is a full)
    const full = base === undefined || !Object.values(this.isVhdDifferencing).some(Boolean)
    return { vmUuid: this.vmUuid, timestamp: run.timestamp, full, sizeBytes: this.sizeBytes, readBytes: this.readBytes, succeeded: succeeded.sort(), failed: [...this.failedTargets.keys()].sort() }
  }

  /** One target: metadata, cache, retention; false when it was dropped (before or now). */
  private async publishOn(t: RunTarget): Promise<boolean> {
    const { ctx, run, settings, task } = this.input
    const { vmUuid } = this
    if (this.failedTargets.has(t.id)) {
      await removeWritten([t], this.written, vmUuid, ctx.jobId, run.timestamp)
      await removeEmptyDirs([t], vmUuid, ctx.jobId, this.disks, task)
      return false
    }
    try {
      const records = { vm: this.input.vm.record, snapshot: this.input.snapshot, disks: this.disks, vhdSource: this.vhdSource, isVhdDifferencing: this.isVhdDifferencing, baseVdiOf: this.baseVdiOf, size: this.sizeBytes }
      const metadata = await buildMetadata(ctx, run, records, t)
      await writeMetadata(t.remote, vmUuid, run.timestamp, metadata, ctx.signal)
      this.transferTasks.get(t.id)?.end('success', { size: this.sizeBytes })
      await updateCache(t.remote, vmUuid)
      const mergeTask = this.exportTasks.get(t.id)!.child('merge')
      await mergeTask.run(() => applyRetention(t.remote, vmUuid, ctx.jobId, ctx.scheduleId, settings.exportRetention, ctx.signal), (r) => r as unknown as JsonValue)
      await updateCache(t.remote, vmUuid)
      this.exportTasks.get(t.id)!.end('success')
      return true
    } catch (error) {
      this.dropTarget(t.id, toError(error))
      return false
    }
  }
}

async function removeWritten(targets: readonly RunTarget[], written: Map<string, string[]>, vmUuid: string, jobId: string, ts: string): Promise<void> {
  for (const t of targets) {
    for (const path of written.get(t.id) ?? []) {
      try {
        if (path.endsWith('.alias.vhd')) {
          const vdi = path.split('/').at(-2)!
          await t.remote.rmtree(aliasDataPath(vmUuid, jobId, vdi, ts))
        }
        await t.remote.unlink(path)
      } catch (error) {
        if ((error as { code?: unknown }).code !== 'ENOENT') throw error
      }
    }
    written.delete(t.id)
  }
}

/** Removes this backup's directories (`vdis/<job>/<vdi>`, `vdis/<job>`, `vdis`, the VM's) where they are left empty. */
async function removeEmptyDirs(targets: readonly RunTarget[], vmUuid: string, jobId: string, disks: readonly XapiDisk[], task: Task): Promise<void> {
  const remove = (t: RunTarget, path: string) =>
    t.remote.removeEmptyDir(path).catch((error: unknown) => task.warning(`could not remove the empty directory ${path} on ${t.id}`, { error: serializeError(error).message }))
  for (const t of targets) {
    for (const disk of disks) await remove(t, vdiDir(vmUuid, jobId, disk.sourceVdiUuid))
    for (const dir of [`${vmDir(vmUuid)}/vdis/${jobId}`, `${vmDir(vmUuid)}/vdis`, vmDir(vmUuid)]) await remove(t, dir)
  }
}

/**
 * A retried job does not back a VM up twice.
 *
 * A proxy killed after a VM's backup was published (its metadata written last on every remote) but
 * before the queue job completed leaves the job to be run again: by BullMQ's stalled-job check, or as a
 * retry. That attempt would make a second backup of the VM for the same scheduled run (what the chaos
 * runs counted as duplicates). On a retried job the run gets the queue job's enqueue time; a VM whose
 * every remote target already holds a backup of this job and schedule made since then was backed up by
 * an earlier attempt of this very job (the queue never runs one job and schedule twice at once; backup
 * timestamps are whole seconds, so the enqueue time is taken to its second), and is
 * reported from those backups instead, and the earlier attempt's snapshot housekeeping is finished
 * (marked exported, older ones pruned: job-snapshots.ts). SR targets (replicas) and partial publications
 * are run again.
 */
import { listBackups } from './catalog.js'
import { finishEarlierAttemptSnapshots } from './job-snapshots.js'
import type { Task } from './task-log.js'
import type { VmBackupContext, VmBackupResult } from './vm-backup.js'

export async function doneByEarlierAttempt(vmUuid: string, ctx: VmBackupContext, snapshotRetention: number, task: Task): Promise<VmBackupResult | undefined> {
  const since = ctx.earlierAttemptsSince
  if (since === undefined || ctx.targets.length === 0 || (ctx.srTargets ?? []).length > 0) return undefined
  const found = []
  for (const t of ctx.targets) {
    const mine = (await listBackups(t.remote, vmUuid)).filter((b) => b.metadata.jobId === ctx.jobId && b.metadata.scheduleId === ctx.scheduleId && b.metadata.timestamp >= Math.floor(since / 1000) * 1000)
    const newest = mine.at(-1)
    if (newest === undefined) return undefined
    found.push(newest)
  }
  const first = found[0]
  if (first === undefined) return undefined
  task.info('already backed up by an earlier attempt of this job: not backed up twice', { backups: found.map((b) => b.metadataPath) })
  if (ctx.mode !== 'full') await finishEarlierAttemptSnapshots(ctx.xapi, vmUuid, ctx.jobId, String(first.metadata.vmSnapshot.uuid), snapshotRetention, task)
  return {
    vmUuid,
    timestamp: first.timestamp,
    full: found.every((b) => b.metadata.mode === 'full' || b.raw.isFull === true),
    sizeBytes: 0,
    readBytes: 0,
    durationMs: 0,
    succeeded: ctx.targets.map((t) => t.id).sort(),
    failed: [],
  }
}

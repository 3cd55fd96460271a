/**
 * The backup snapshots a job keeps on the pool, and the ones it must not keep.
 *
 * A delta job keeps its newest exported snapshot (the next base) and, with `snapshotRetention`, a few
 * more; a successful run prunes the rest (XO's `_removeUnusedSnapshots` after the copy). A run killed
 * after its snapshot (SIGKILL, a lost lock) never reaches that step nor its own failure path, so its
 * snapshot stays; each later attempt of the job would add one more. XO's runner also prunes before it
 * snapshots; here the snapshots that step removes are the ones of killed attempts: this job's and
 * schedule's snapshots that no target holds a backup of (no remote's metadata names them, no replica
 * came from them) and that were never marked `xo:backup:exported`. Such a snapshot can never be a base,
 * and keeping it costs the pool a full copy of the VM's changed blocks.
 *
 * A run killed between `VM.snapshot` and the tagging leaves a snapshot no tag identifies. As XO does, the
 * snapshot is taken under a temporary name (`xo-backup-temp-snapshot-name`), tagged, then renamed to
 * its real name; a VM's snapshots still under the temporary name are removed before the next snapshot.
 *
 * A retried attempt that finds the VM already backed up by an earlier attempt (earlier-attempt.ts)
 * finishes that attempt's housekeeping instead: the earlier snapshot is marked exported and the older
 * ones are pruned, so the next run deltas from it.
 */
import { serializeError } from '../common/errors.js'
import { TAG_EXPORTED, TAG_JOB, TAG_SCHEDULE, tagDatetime, tagOf } from './backup-keys.js'
import type { BackupXapi, XapiObject } from './ports.js'
import type { Task } from './task-log.js'
import { setOnVmAndVdis, tagSnapshot } from './xo-records.js'

/** XO's name of a backup snapshot until it is tagged (XO's `TEMP_SNAPSHOT_NAME`). */
export const TEMP_SNAPSHOT_NAME = 'xo-backup-temp-snapshot-name'

/** This job's backup snapshots of the VM (XO's `xo:backup:job` tag). */
export async function listJobSnapshots(xapi: BackupXapi, vmRef: string, jobId: string): Promise<XapiObject[]> {
  return (await xapi.listSnapshots(vmRef)).filter((s) => tagOf(s.record, TAG_JOB) === jobId)
}

/**
 * Destroys the snapshots killed attempts of this job and schedule left (held by no target, never
 * exported) and returns the others. A snapshot that cannot be destroyed is kept, with a warning.
 */
export async function removeKilledAttemptSnapshots(
  xapi: BackupXapi, snapshots: readonly XapiObject[], scheduleId: string, heldByATarget: ReadonlySet<string>, task: Task,
): Promise<XapiObject[]> {
  const kept: XapiObject[] = []
  for (const s of snapshots) {
    const killed = tagOf(s.record, TAG_SCHEDULE) === scheduleId && tagOf(s.record, TAG_EXPORTED) !== 'true' && !heldByATarget.has(s.uuid)
    if (!killed) {
      kept.push(s)
      continue
    }
    try {
      await xapi.destroySnapshot(s.ref)
      task.info(`removed the snapshot ${s.uuid} an interrupted run of this job left (no target holds a backup of it)`)
    } catch (error) {
      task.warning(`could not remove the snapshot ${s.uuid} an interrupted run of this job left`, { error: serializeError(error).message })
      kept.push(s)
    }
  }
  return kept
}

/**
 * Takes the run's snapshot under the temporary name, tags it (job, schedule, VM, datetime: XO's
 * setVmOtherConfig), then gives it its real name.
 */
export async function takeBackupSnapshot(
  xapi: BackupXapi, vm: XapiObject, o: { nameLabel: string; checkpoint: boolean; signal: AbortSignal; jobId: string; scheduleId: string; vmUuid: string; timestampMs: number },
): Promise<XapiObject> {
  const s = await xapi.snapshot(vm.ref, TEMP_SNAPSHOT_NAME, { checkpoint: o.checkpoint, signal: o.signal })
  await tagSnapshot(xapi, s.ref, o)
  await xapi.setNameLabel(s.ref, o.nameLabel)
  return { ...s, record: { ...s.record, name_label: o.nameLabel } }
}

/** Destroys the VM's snapshots left under the temporary name (a run killed before tagging them). */
export async function removeUntaggedSnapshots(xapi: BackupXapi, vmRef: string, task: Task): Promise<void> {
  for (const s of await xapi.listSnapshots(vmRef)) {
    if (s.record.name_label !== TEMP_SNAPSHOT_NAME) continue
    try {
      await xapi.destroySnapshot(s.ref)
      task.info(`removed the snapshot ${s.uuid} a run killed before tagging it left`)
    } catch (error) {
      task.warning(`could not remove the untagged snapshot ${s.uuid}`, { error: serializeError(error).message })
    }
  }
}

/**
 * Keeps the newest `keep` backup snapshots of this job and destroys the others: `created`, this run's,
 * counts as the newest (its record may predate its tags), then the `older` ones by `xo:backup:datetime`
 * (one without it counts as the oldest). A snapshot that cannot be destroyed stays, with a warning.
 */
export async function pruneSnapshots(xapi: BackupXapi, older: readonly XapiObject[], created: XapiObject, keep: number, task: Task): Promise<void> {
  const newestFirst = older
    .filter((s) => s.ref !== created.ref)
    .sort((a, b) => (tagDatetime(b.record) ?? '').localeCompare(tagDatetime(a.record) ?? ''))
  for (const s of [created, ...newestFirst].slice(Math.max(0, keep))) {
    try {
      await xapi.destroySnapshot(s.ref)
    } catch (error) {
      task.warning(`could not delete old backup snapshot ${s.uuid}`, { error: serializeError(error).message })
    }
  }
}

/**
 * An earlier attempt of this job backed the VM up from the snapshot `snapshotUuid` but was killed
 * before its housekeeping: mark that snapshot exported (the next base) and prune the older ones.
 */
export async function finishEarlierAttemptSnapshots(xapi: BackupXapi, vmUuid: string, jobId: string, snapshotUuid: string, retention: number, task: Task): Promise<void> {
  const vm = await xapi.getVm(vmUuid)
  const snapshots = await listJobSnapshots(xapi, vm.ref, jobId)
  const snapshot = snapshots.find((s) => s.uuid === snapshotUuid)
  if (snapshot === undefined) return
  if (tagOf(snapshot.record, TAG_EXPORTED) !== 'true') await setOnVmAndVdis(xapi, snapshot.ref, { [TAG_EXPORTED]: 'true' })
  await pruneSnapshots(xapi, snapshots, snapshot, Math.max(1, retention), task)
}

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
 * An attempt killed between `VM.snapshot` and the tagging of its snapshot leaves one without the job's
 * tag: found by the name this job gives its snapshots (XO's template `[XO Backup <job>] <VM>`) and the
 * missing `xo:backup:job` tag, and removed too (the sigkill-real chaos run left 11 such after each job's
 * next run).
 *
 * A retried attempt that finds the VM already backed up by an earlier attempt (earlier-attempt.ts)
 * finishes that attempt's housekeeping instead: the earlier snapshot is marked exported and the older
 * ones are pruned, so the next run deltas from it.
 */
import { serializeError } from '../common/errors.js'
import { isTimestamp } from './layout.js'
import { TAG_DATETIME, TAG_EXPORTED, TAG_JOB, TAG_SCHEDULE } from './base-choice.js'
import type { BackupXapi, XapiObject } from './ports.js'
import type { Task } from './task-log.js'
import { setOnVmAndVdis } from './xo-records.js'

export function tagOf(obj: XapiObject, key: string): string | undefined {
  const oc = obj.record.other_config
  if (typeof oc !== 'object' || oc === null) return undefined
  const v = (oc as Record<string, unknown>)[key]
  return typeof v === 'string' ? v : undefined
}

/** XO's `xo:backup:datetime` (`20261125T22:30:00Z`, XAPI's format; our older releases wrote `20261125T223000Z`) → `20261125T223000Z`. */
export function snapshotDatetime(obj: XapiObject): string | undefined {
  const datetime = tagOf(obj, TAG_DATETIME)?.replace(/:/g, '')
  return datetime !== undefined && isTimestamp(datetime) ? datetime : undefined
}

/** This job's backup snapshots of the VM (XO's `xo:backup:job` tag). */
export async function listJobSnapshots(xapi: BackupXapi, vmRef: string, jobId: string): Promise<XapiObject[]> {
  return (await xapi.listSnapshots(vmRef)).filter((s) => tagOf(s, TAG_JOB) === jobId)
}

/** XO's default snapshot name (`snapshotNameLabelTpl`: '[XO Backup {job.name}] {vm.name_label}'). */
export function backupSnapshotName(jobName: string, vmName: string): string {
  return `[XO Backup ${jobName}] ${vmName}`
}

/**
 * Destroys the VM's snapshots named `nameLabel` that carry no `xo:backup:job` tag: what attempts killed
 * before tagging their snapshot left. One that cannot be destroyed stays, with a warning.
 */
export async function removeUntaggedAttemptSnapshots(xapi: BackupXapi, vmRef: string, nameLabel: string, task: Task): Promise<void> {
  for (const s of await xapi.listSnapshots(vmRef)) {
    if (s.record.name_label !== nameLabel || tagOf(s, TAG_JOB) !== undefined) continue
    try {
      await xapi.destroySnapshot(s.ref)
      task.info(`removed the snapshot ${s.uuid} an interrupted run of this job left before tagging it`)
    } catch (error) {
      task.warning(`could not remove the untagged snapshot ${s.uuid} an interrupted run of this job left`, { error: serializeError(error).message })
    }
  }
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
    const killed = tagOf(s, TAG_SCHEDULE) === scheduleId && tagOf(s, TAG_EXPORTED) !== 'true' && !heldByATarget.has(s.uuid)
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

/** Keeps the newest max(1, retention) backup snapshots of this job (the newest is the next base). */
export async function pruneSnapshots(xapi: BackupXapi, older: readonly XapiObject[], created: XapiObject, retention: number, task: Task): Promise<void> {
  const keepOlder = Math.max(1, retention) - 1
  const sorted = older
    .filter((s) => s.ref !== created.ref)
    .sort((a, b) => (snapshotDatetime(b) ?? '').localeCompare(snapshotDatetime(a) ?? ''))
  for (const s of sorted.slice(keepOlder)) {
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
  if (tagOf(snapshot, TAG_EXPORTED) !== 'true') await setOnVmAndVdis(xapi, snapshot.ref, { [TAG_EXPORTED]: 'true' })
  await pruneSnapshots(xapi, snapshots, snapshot, retention, task)
}

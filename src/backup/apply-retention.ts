/**
 * Applies retention on one remote for one VM, job and schedule (plan in retention.ts):
 * metadata of the backups that leave first (they stop being visible), then merges of deleted ancestors
 * into the oldest kept delta of each disk (vhd-ops.mergeChain: resumable, see the VHD engine), then the
 * VHDs nothing kept depends on.
 */
import { listBackups } from './catalog.js'
import { resolveVhdPath, sourceVdiUuid } from './layout.js'
import { planRetention, type RetentionBackup } from './retention.js'
import { mergeChain, removeVhd } from './vhd-ops.js'
import type { Remote } from '../remotes/remote.js'
import { CancelledError } from '../common/errors.js'

export interface RetentionOutcome {
  kept: number
  deleted: string[]
  merged: number
}

export async function applyRetention(remote: Remote, vmUuid: string, jobId: string, scheduleId: string, retention: number, signal?: AbortSignal): Promise<RetentionOutcome> {
  const backups = (await listBackups(remote, vmUuid)).filter((b) => b.metadata.jobId === jobId && b.metadata.scheduleId === scheduleId)
  const input: RetentionBackup[] = backups.map((b) => ({
    timestamp: b.timestamp,
    metadataPath: b.metadataPath,
    disks: Object.fromEntries(
      Object.entries(b.metadata.vhds).map(([ref, path]) => [
        sourceVdiUuid(b.metadata, ref) ?? ref,
        { path: resolveVhdPath(vmUuid, path), differencing: b.metadata.isVhdDifferencing[ref] ?? true },
      ]),
    ),
  }))
  const plan = planRetention(input, Math.max(1, retention))
  for (const path of plan.deleteMetadata) await remote.unlink(path)
  for (const m of plan.merges) {
    if (signal?.aborted === true) throw new CancelledError('retention was cancelled; the next run resumes it')
    await mergeChain(remote, m.chain, signal)
  }
  for (const path of plan.deleteVhds) await removeVhd(remote, path)
  return { kept: plan.keep.length, deleted: plan.deleteMetadata, merged: plan.merges.length }
}

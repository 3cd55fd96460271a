/**
 * Applies retention on one remote for one VM, job and schedule (plan in retention.ts):
 * first the merges an earlier run left unfinished (killed mid-merge: their `.<parent>.merge.json` states
 * under the job's disk directories; the backups they fold away have no metadata any more, so no plan
 * would name them again), then the metadata of the backups that leave (they stop being visible), then
 * merges of deleted ancestors into the oldest kept delta of each disk (vhd-ops.mergeChain: resumable,
 * see the VHD engine), then the VHDs nothing kept depends on.
 */
import { listBackups } from './catalog.js'
import { resolveVhdPath, sourceVdiUuid, vmDir } from './layout.js'
import { planRetention, type RetentionBackup } from './retention.js'
import { mergeChain, removeVhd } from './vhd-ops.js'
import type { Remote } from '../remotes/remote.js'
import { CancelledError, errorCode } from '../common/errors.js'
import { resumeMerge } from '../vhd/merge.js'

interface RetentionOutcome {
  kept: number
  deleted: string[]
  merged: number
  /** unfinished merges of earlier runs, finished now (their parent paths) */
  resumed: string[]
  /** merge states whose child no longer exists, removed (their paths) */
  staleStates: string[]
}

/** Finishes the merges earlier runs of this job left in its disk directories. */
async function resumeMerges(remote: Remote, vmUuid: string, jobId: string, signal?: AbortSignal): Promise<{ resumed: string[]; staleStates: string[] }> {
  const out = { resumed: [] as string[], staleStates: [] as string[] }
  const jobDir = `${vmDir(vmUuid)}/vdis/${jobId}`
  let entries: { path: string; isDirectory: boolean }[]
  try {
    entries = await remote.list(jobDir, { recursive: true, includeHidden: true })
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return out
    throw error
  }
  for (const e of entries) {
    if (e.isDirectory || e.path.includes('/data/') || !/(^|\/)\.[^/]+\.merge\.json$/.test(e.path)) continue
    if (signal?.aborted === true) throw new CancelledError('retention was cancelled; the next run resumes it')
    const r = await resumeMerge(remote, `${jobDir}/${e.path}`, signal === undefined ? {} : { signal })
    if (r.outcome === 'resumed') out.resumed.push(r.state.parentPath)
    else out.staleStates.push(`${jobDir}/${e.path}`)
  }
  return out
}

export async function applyRetention(remote: Remote, vmUuid: string, jobId: string, scheduleId: string, retention: number, signal?: AbortSignal): Promise<RetentionOutcome> {
  const { resumed, staleStates } = await resumeMerges(remote, vmUuid, jobId, signal)
  const backups = (await listBackups(remote, vmUuid)).filter((b) => b.metadata.mode === 'delta' && b.metadata.jobId === jobId && b.metadata.scheduleId === scheduleId)
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
  return { kept: plan.keep.length, deleted: plan.deleteMetadata, merged: plan.merges.length, resumed, staleStates }
}

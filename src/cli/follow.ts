/**
 * Following a queued job until it ends, for `backup` and `job follow`: its progress as a bar (or plain
 * lines), its task-log events as readable lines on stderr, then on stdout either the task tree with a
 * one-line outcome (default) or the JobSummary as JSON (`--json`). A run that did not succeed throws a
 * coded error carrying the real cause (the deepest failed task's error), so the exit code is 1.
 */
import { BackupProxyError, type JsonValue } from '../common/errors.js'
import { formatBytes, formatDurationMs } from '../common/units.js'
import type { JobHandle } from '../queue/client.js'
import type { JobSummary, TaskLogEvent, TaskSummary } from '../queue/task-log.js'
import type { CliIo } from './context.js'
import { describeError, renderEvent, renderTaskTree, type ViewNames } from './job-view.js'
import { createProgress } from './progress.js'

/** The deepest failed task (its error is the real cause), else undefined. */
function failedTask(t: TaskSummary): TaskSummary | undefined {
  for (const c of t.tasks ?? []) {
    if (c.status !== 'failure' && c.status !== 'interrupted') continue
    const deeper = failedTask(c)
    if (deeper !== undefined) return deeper
  }
  return t.status === 'failure' || t.status === 'interrupted' ? t : undefined
}

/** The real cause of a failure: the deepest failed task's error, with its warnings (an XAPI login refused, ...). */
function rootCause(t: TaskSummary): string | undefined {
  const failed = failedTask(t)
  if (failed === undefined) return undefined
  const error = describeError(failed.result)
  const warnings = (failed.warnings ?? []).map((w) => {
    const data = w.data
    const detail = typeof data === 'object' && data !== null && !Array.isArray(data) && typeof data.error === 'string' ? `: ${data.error}` : ''
    return `${w.message}${detail}`
  })
  return [error, ...warnings].filter((x) => x !== undefined).join('; ') || undefined
}

/** "job run.x: success in 45s, 2 VM(s), 1.2 GiB written" */
export function outcomeLine(s: JobSummary): string {
  const r = typeof s.result === 'object' && s.result !== null && !Array.isArray(s.result) ? s.result : {}
  const parts = [`job ${s.jobId}: ${s.status}`]
  if (s.end !== undefined) parts.push(`in ${formatDurationMs(s.end - s.start)}`)
  if (typeof r.vms === 'number') parts.push(`${typeof r.succeeded === 'number' ? `${r.succeeded}/` : ''}${r.vms} VM(s)`)
  if (typeof r.sizeBytes === 'number') parts.push(`${formatBytes(r.sizeBytes)} written`)
  if (s.ranBy !== undefined) parts.push(`by ${s.ranBy}`)
  return parts.join(', ')
}

/** The coded error a finished run that did not succeed exits with. */
export function failureOf(s: JobSummary): BackupProxyError | undefined {
  if (s.status === 'success' || s.status === 'skipped') return undefined
  const code = s.status === 'interrupted' && s.error?.code === 'E_TIMEOUT' ? 'E_TIMEOUT' : s.status === 'interrupted' ? 'E_CANCELLED' : 'E_BACKUP'
  const cause = rootCause(s) ?? describeError(s.error as unknown as JsonValue | undefined)
  return new BackupProxyError(code, `job ${s.jobId} ended ${s.status}${cause === undefined ? '' : `: ${cause}`} (details: backup-proxy job show ${s.jobId})`)
}

interface FollowOptions {
  json?: boolean
  names?: ViewNames
  label?: string
  /** events recorded before following started (`job follow` on a running job), printed first */
  replay?: () => Promise<TaskLogEvent[]>
}

/** Follows `handle` to its end and prints the outcome; throws failureOf() for a run that did not succeed. */
export async function followJob(handle: JobHandle, io: CliIo, options: FollowOptions = {}): Promise<JobSummary> {
  const quiet = options.json === true && !io.isTTY
  const progress = createProgress(io, options.label ?? handle.id)
  const byId = new Map<string, TaskSummary>()
  if (!quiet) {
    handle.onProgress((p) => progress.update({ percent: p.percent, doneBytes: p.doneBytes, totalBytes: p.totalBytes, detail: p.message }))
    const seen = new Set<string>()
    const show = (e: TaskLogEvent) => {
      const key = `${e.taskId} ${e.event} ${e.timestamp} ${'message' in e ? e.message : ''}`
      if (seen.has(key)) return
      seen.add(key)
      progress.print(renderEvent(e, byId, options.names))
    }
    handle.onTaskLog(show)
    await handle.ready()
    for (const e of (await options.replay?.()) ?? []) show(e)
  }
  await handle.ready()
  const summary = await handle.result()
  handle.stop()
  if (!quiet) progress.done(summary.status === 'success' ? { percent: 100 } : undefined)
  if (options.json === true) io.stdout(`${JSON.stringify(summary, null, 2)}\n`)
  else io.stdout(`${renderTaskTree(summary, options.names)}${outcomeLine(summary)}\n`)
  const failure = failureOf(summary)
  if (failure !== undefined) throw failure
  return summary
}

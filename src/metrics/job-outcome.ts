/**
 * The outcome a finished job is counted under (jobs_total{status}, backup_runs_total{status}), finer
 * than its task-log status: an interrupted run that was cancelled is `cancelled` (the operator asked
 * for it: not an incident), a failed backup run in which some VMs were backed up is `partial` (the
 * night was not lost, but something must be looked at), and the backup job and schedule it ran.
 */

interface JobOutcome {
  status: string
  backup?: { job: string; schedule: string }
}

type Obj = Record<string, unknown>
const obj = (v: unknown): Obj | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : undefined)

/** `summary` is the JobSummary (undefined when the attempt threw), `data` the queued job data. */
export function jobOutcome(kind: string, taskStatus: string, summary: unknown, data: unknown): JobOutcome {
  const s = obj(summary)
  const error = obj(s?.error)
  const result = obj(s?.result)
  let status = taskStatus
  if (taskStatus === 'interrupted' && error?.code === 'E_CANCELLED') status = 'cancelled'
  else if (taskStatus === 'failure' && kind === 'backup.run' && typeof result?.succeeded === 'number' && result.succeeded > 0) status = 'partial'
  const task = obj(obj(data)?.task)
  const job = obj(task?.job)?.id
  const schedule = obj(task?.schedule)?.id
  if (kind !== 'backup.run' || typeof job !== 'string' || typeof schedule !== 'string') return { status }
  return { status, backup: { job, schedule } }
}

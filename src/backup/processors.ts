/**
 * Queue processors of the backup engine (registered in src/workers/builtin-processors.ts):
 * `backup.run` (run.ts through the stream pool) and `backup.verify` (verify.ts on one backup).
 * Their task-log subtrees hang under the job runner's root task.
 */
import type { JsonValue } from '../common/errors.js'
import type { TaskResult } from '../queue/task-log.js'
import { createRemote } from '../remotes/index.js'
import type { JobContext } from '../workers/processors.js'
import { poolExporter } from './pool-exporter.js'
import { remoteOptionsOf, runBackup } from './run.js'
import { verifyRemote } from './verify.js'

export async function backupRunProcessor(ctx: JobContext<'backup.run'>): Promise<TaskResult> {
  let lastPercent = -1
  const summary = await runBackup(ctx.task, {
    defaults: ctx.config.backup,
    exporter: poolExporter(ctx.pool),
    signal: ctx.signal,
    emit: ctx.log,
    parentTaskId: ctx.root.id,
    log: ctx.logger,
    progress: (p) => {
      const percent = p.vmsTotal === 0 ? 100 : Math.floor((100 * p.vmsDone) / p.vmsTotal)
      if (percent === lastPercent && p.vmsDone < p.vmsTotal && p.readBytes % (64 * 1024 * 1024) > 4 * 1024 * 1024) return
      lastPercent = percent
      ctx.progress({ percent, doneBytes: p.readBytes, message: `${p.vmsDone}/${p.vmsTotal} VMs` })
    },
  })
  const status = summary.status === 'pending' ? 'interrupted' : summary.status
  return { status, ...(summary.result === undefined ? {} : { result: summary.result }) }
}

export async function backupVerifyProcessor(ctx: JobContext<'backup.verify'>): Promise<TaskResult> {
  const remote = createRemote(ctx.task.remote.url, remoteOptionsOf(ctx.task.remote))
  await remote.open()
  try {
    const report = await verifyRemote(remote, { metadataPath: ctx.task.metadataPath, full: true, signal: ctx.signal })
    for (const p of report.problems) ctx.root.warning(`${p.kind}: ${p.path}: ${p.message}`)
    return { status: report.problems.length === 0 ? 'success' : 'failure', result: report as unknown as JsonValue }
  } finally {
    await remote.close()
  }
}

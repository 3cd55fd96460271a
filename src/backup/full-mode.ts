/**
 * XO's full mode (`mode: 'full'`) when the job also names SRs (disaster recovery).
 *
 * Remote targets get XO's XVA full backup (full-backup.ts); SR targets get a full copy of each disk
 * through the replication path (replication.ts, reached through the disk-path function the caller
 * passes, so this module does not import vm-backup.ts at run time). The two halves are isolated as
 * targets are: one failing does not stop the other, and the VM fails only when every target failed.
 */
import { BackupProxyError, serializeError } from '../common/errors.js'
import { backupVmFull } from './full-backup.js'
import type { Task } from './task-log.js'
import type { VmBackupContext, VmBackupResult, VmSettings } from './vm-backup.js'

type Half = (ctx: VmBackupContext) => Promise<VmBackupResult>

export async function backupVmFullMode(
  vmUuid: string, ctx: VmBackupContext, settings: VmSettings, task: Task, diskPath: Half,
): Promise<VmBackupResult> {
  const srTargets = ctx.srTargets ?? []
  if (srTargets.length === 0) return backupVmFull(vmUuid, ctx, settings, task)
  const halves: { ids: string[]; run: () => Promise<VmBackupResult> }[] = []
  if (ctx.targets.length > 0) halves.push({ ids: ctx.targets.map((t) => t.id), run: () => backupVmFull(vmUuid, { ...ctx, srTargets: [] }, settings, task) })
  halves.push({ ids: srTargets.map((t) => t.id), run: () => diskPath({ ...ctx, targets: [] }) })
  const results: VmBackupResult[] = []
  const failed: string[] = []
  const errors: string[] = []
  for (const half of halves) {
    ctx.signal.throwIfAborted()
    try {
      results.push(await half.run())
    } catch (error) {
      failed.push(...half.ids)
      errors.push(serializeError(error).message)
    }
  }
  const first = results[0]
  if (first === undefined) throw new BackupProxyError('E_BACKUP', `VM ${vmUuid}: every target failed: ${errors.join('; ')}`)
  return {
    ...first,
    full: true,
    sizeBytes: results.reduce((n, r) => n + r.sizeBytes, 0),
    readBytes: results.reduce((n, r) => n + r.readBytes, 0),
    durationMs: results.reduce((n, r) => n + r.durationMs, 0),
    succeeded: results.flatMap((r) => r.succeeded).sort(),
    failed: [...failed, ...results.flatMap((r) => r.failed)].sort(),
  }
}

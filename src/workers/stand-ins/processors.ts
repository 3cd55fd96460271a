/**
 * STAND-IN processors (tests, bench, demos; enabled with BACKUP_PROXY_STAND_INS=1 or registerStandIns()).
 * They exercise the worker the way the real engine does without touching XAPI:
 *
 * `backup.run`: for each VM uuid of `job.vms`, one 'standin.stream' thread task writes
 * `settings[''].standInDiskBytes` bytes (default 1 MiB) to `<standInDir>/<jobId>/<vm>.bin`, slowly when
 * `standInChunkDelayMs` is set, through a temporary that a cancel removes. On a retry (crash recovery) it
 * first removes the temporaries a previous attempt left, as the engine removes its snapshot and temps.
 * `standInFail: 'transient-once'` throws a retryable error on the first attempt; `'auth'` throws an XAPI
 * authentication error (not retried); `'ignore-abort'` never returns, whatever its signal says (a stuck
 * engine, for the forced-stop path of `serve`). `remote.test` answers with the remote's scheme; `noop` kinds return.
 */
import { mkdir, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BackupProxyError, XapiError, serializeError, type JsonValue } from '../../common/errors.js'
import type { TaskResult } from '../../queue/task-log.js'
import type { BackupRunTask } from '../../queue/tasks.js'
import type { JobContext, ProcessorRegistry } from '../processors.js'

function vmList(task: BackupRunTask): string[] {
  const vms = task.job.vms
  if (!('uuid' in vms)) return []
  const u: unknown = vms.uuid
  if (typeof u === 'string') return [u]
  const list: unknown = Array.isArray(u) ? u : (u as { __or?: unknown }).__or
  return Array.isArray(list) ? list.filter((v): v is string => typeof v === 'string') : []
}

function num(v: JsonValue | undefined, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : fallback
}

async function standInBackupRun(ctx: JobContext<'backup.run'>): Promise<TaskResult> {
  const settings = ctx.task.job.settings[''] ?? {}
  const dir = join(typeof settings.standInDir === 'string' ? settings.standInDir : join(tmpdir(), 'bp-standin'), ctx.task.job.id)
  await mkdir(dir, { recursive: true })
  if (ctx.job.isRetry) {
    const leftovers = (await readdir(dir)).filter((f) => f.startsWith('.'))
    await Promise.all(leftovers.map((f) => rm(join(dir, f), { force: true })))
    ctx.root.info('cleaned up the previous attempt', { temporaries: leftovers.length })
  }
  if (settings.standInFail === 'transient-once' && ctx.job.attempt === 1) throw new BackupProxyError('E_BACKUP', 'stand-in transient failure (first attempt only)')
  if (settings.standInFail === 'auth') throw new XapiError('stand-in: XAPI refused the credentials', { fields: { xapiCode: 'SESSION_AUTHENTICATION_FAILED' } })
  if (settings.standInFail === 'ignore-abort') {
    ctx.root.info('stand-in: running until the process ends, ignoring cancellation')
    await new Promise<never>(() => undefined)
  }
  const sizeBytes = num(settings.standInDiskBytes, 1 << 20)
  const chunkDelayMs = num(settings.standInChunkDelayMs, 0)
  const vms = vmList(ctx.task)
  let done = 0
  const results: JsonValue[] = []
  let failed = false
  for (const vm of vms) {
    const task = ctx.root.child('backup VM (stand-in)', { type: 'VM', id: vm })
    try {
      const out = await ctx.pool.run(
        'standin.stream',
        { dir, name: `${vm}.bin`, sizeBytes, chunkBytes: Math.min(sizeBytes || 1, 256 << 10), chunkDelayMs },
        {
          signal: ctx.signal,
          onProgress: (p) => {
            const d = p.doneBytes
            ctx.progress({ percent: Math.floor(((done + d) / Math.max(1, sizeBytes * vms.length)) * 100), doneBytes: done + d, totalBytes: sizeBytes * vms.length })
          },
        },
      )
      done += out.writtenBytes
      task.end('success', { size: out.writtenBytes })
      results.push({ vm, size: out.writtenBytes })
    } catch (error) {
      task.end(ctx.signal.aborted ? 'interrupted' : 'failure', serializeError(error) as unknown as JsonValue)
      if (ctx.signal.aborted) throw error
      failed = true
    }
  }
  return { status: failed ? 'failure' : 'success', result: { vms: results, writtenBytes: done } }
}

// eslint-disable-next-line @typescript-eslint/require-await -- processors are async by contract
async function standInRemoteTest(ctx: JobContext<'remote.test'>): Promise<TaskResult> {
  return { status: 'success', result: { scheme: ctx.task.remote.url.split(':')[0] ?? '' } }
}

export function registerStandIns(registry: ProcessorRegistry): ProcessorRegistry {
  return registry.register('backup.run', standInBackupRun).register('remote.test', standInRemoteTest)
}

/**
 * Helpers of the Redis Cluster and Sentinel tests: a config in any mode, proxies whose stand-in
 * `backup.run` counts its successful runs per job (a job completed twice would show as 2), and the
 * final check that every job of a batch succeeded exactly once.
 */
import { expect } from 'vitest'
import { BackupProxyError, serializeError } from '../../src/common/errors.js'
import { compileConfig, type Config, type RawConfig } from '../../src/config/index.js'
import type { EnqueueClient, JobHandle } from '../../src/queue/client.js'
import type { ProxyRuntime } from '../../src/workers/proxy.js'
import { backupTask, sealKeyText, standInRegistry, startProxy } from '../workers/fixtures.js'

export function modeConfig(redis: NonNullable<RawConfig['redis']>, proxy: { id: string; pools?: string[] }, workers: Record<string, unknown> = {}): Config {
  return compileConfig({
    redis,
    proxy,
    security: { sealKey: sealKeyText },
    http: { listen: '127.0.0.1:0' },
    log: { level: 'silent' },
    workers: { threads: 1, concurrency: 2, backoffMs: 100, lockDurationMs: 5000, stalledIntervalMs: 1000, attempts: 5, ...workers },
  })
}

/** Resolves when `gate` does; rejects with the signal's reason if it aborts first (lock lost, shutdown). */
async function passGate(gate: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) throw signal.reason
  let onAbort: (() => void) | undefined
  try {
    await Promise.race([gate, new Promise<never>((_, reject) => signal.addEventListener('abort', (onAbort = () => reject(signal.reason as Error)), { once: true }))])
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
  }
}

/**
 * Runs per job id that returned success, across every proxy of a test. `hold()` makes every `backup.run`
 * that starts wait, holding its job's lock, until `release()` (or until its signal aborts): a test then
 * knows jobs are running when it breaks Redis, whatever the machine's speed, instead of hoping to catch
 * them during their few milliseconds of work.
 */
export class RunCounter {
  readonly successes = new Map<string, number>()
  readonly starts = new Map<string, number>()
  #gate: Promise<void> | undefined
  #release: (() => void) | undefined

  hold(): void {
    this.#gate = new Promise<void>((resolve) => (this.#release = resolve))
  }

  release(): void {
    this.#release?.()
    this.#gate = undefined
  }

  registry(): ReturnType<typeof standInRegistry> {
    const registry = standInRegistry()
    const base = registry.get('backup.run')!
    registry.register('backup.run', async (ctx) => {
      this.starts.set(ctx.job.id, (this.starts.get(ctx.job.id) ?? 0) + 1)
      if (this.#gate !== undefined) await passGate(this.#gate, ctx.signal)
      const result = await base(ctx as unknown as Parameters<typeof base>[0])
      this.successes.set(ctx.job.id, (this.successes.get(ctx.job.id) ?? 0) + 1)
      return result
    })
    return registry
  }

  async proxy(config: Config): Promise<ProxyRuntime> {
    return startProxy(config, this.registry())
  }

  /** Jobs that started more than once (retried after a failover or a restart). */
  retried(): string[] {
    return [...this.starts].filter(([, n]) => n > 1).map(([id]) => id)
  }

  /** With BACKUP_PROXY_TEST_FIGURES=1, prints what happened (for RELIABILITY.md); tests assert, not this. */
  report(what: string, extra: Record<string, unknown> = {}): void {
    if (process.env.BACKUP_PROXY_TEST_FIGURES !== '1') return
    const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0)
    console.log(`[figures] ${what}: ${JSON.stringify({ jobs: this.successes.size, starts: sum(this.starts), successfulRuns: sum(this.successes), retriedJobs: this.retried().length, ...extra })}`)
  }
}

export function smallTask(dir: string, chunkDelayMs = 0): ReturnType<typeof backupTask> {
  return backupTask({ settings: { standInDir: dir, standInDiskBytes: 512 << 10, standInChunkDelayMs: chunkDelayMs } })
}

/** How many times each job of `queues` was recorded as completed (from the queues' event streams). */
export async function completions(client: EnqueueClient, queues: Iterable<string>): Promise<Map<string, number>> {
  const redis = await client.redis()
  const out = new Map<string, number>()
  for (const q of queues) {
    for (const [, fields] of await redis.xrange(`${client.prefix}:${q}:events`, '-', '+')) {
      const field = (k: string) => fields[fields.indexOf(k) + 1]
      if (field('event') === 'completed') out.set(field('jobId')!, (out.get(field('jobId')!) ?? 0) + 1)
    }
  }
  return out
}

/**
 * Every handle's job succeeded and was recorded as completed exactly once. (Its processor may have run
 * to the end twice: an attempt whose lock expired during the outage finishes its work but cannot
 * complete the job, which another attempt does: at-least-once work, exactly-once completion.)
 */
export async function expectEachSucceededOnce(handles: readonly JobHandle[], counter: RunCounter): Promise<void> {
  const summaries = await Promise.all(handles.map((h) => h.result()))
  for (const [i, s] of summaries.entries()) expect(s.status, `${handles[i]!.id}: ${JSON.stringify(s.error)}`).toBe('success')
  const done = await completions(handles[0]!.client, new Set(handles.map((h) => h.queue)))
  for (const h of handles) expect(done.get(h.id) ?? 0, `completions of ${h.id}`).toBe(1)
  for (const h of handles) expect(counter.successes.get(h.id) ?? 0, `successful runs of ${h.id}`).toBeGreaterThanOrEqual(1)
}

/** The error of `fn`, which must be a BackupProxyError with `code` and none of `secrets` anywhere in it. */
export async function codedError(fn: () => Promise<unknown>, code: string, secrets: readonly string[]): Promise<BackupProxyError> {
  const error = await fn().then(() => undefined, (e: unknown) => e)
  expect(error).toBeInstanceOf(BackupProxyError)
  expect((error as BackupProxyError).code).toBe(code)
  for (const secret of secrets) expect(JSON.stringify(serializeError(error))).not.toContain(secret)
  return error as BackupProxyError
}

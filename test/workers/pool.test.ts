import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { BackupProxyError, CancelledError } from '../../src/common/errors.js'
import { StreamPool, streamLayout } from '../../src/workers/pool.js'
import type { MetricDelta } from '../../src/workers/messages.js'
import { waitFor } from '../helpers/ports.js'
import { useTempDir } from '../helpers/tmp.js'

const tmp = useTempDir('bp-pool-')
const pool = new StreamPool({ threads: 2 })
afterAll(() => pool.close())

describe('StreamPool (Piscina threads, stand-in thread tasks)', () => {
  it('runs a task in a thread and returns its output', async () => {
    const out = await pool.run('standin.noop', { value: 42 })
    expect(out.value).toBe(42)
    expect(out.threadId).toBeGreaterThan(0)
  })

  it('rebuilds a thread error with its class, code and fields', async () => {
    const error = await pool.run('standin.noop', { value: 1, failWithCode: 'X1' }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(BackupProxyError)
    expect((error as BackupProxyError).code).toBe('E_BACKUP')
    expect((error as BackupProxyError).fields.requested).toBe('X1')
  })

  it('streams with progress and metric deltas, publishing the file only when complete', async () => {
    const progress: unknown[] = []
    const metrics: MetricDelta[] = []
    const out = await pool.run(
      'standin.stream',
      { dir: tmp(), name: 'a.bin', sizeBytes: 1 << 20, chunkBytes: 64 << 10, chunkDelayMs: 0 },
      { onProgress: (p) => progress.push(p), onMetrics: (d) => metrics.push(...d) },
    )
    expect(out.writtenBytes).toBe(1 << 20)
    expect((await stat(join(tmp(), 'a.bin'))).size).toBe(1 << 20)
    expect(progress.at(-1)).toEqual({ doneBytes: 1 << 20, totalBytes: 1 << 20 })
    const written = metrics.filter((m) => m.metric === 'backup_proxy_bytes_written_total').reduce((s, m) => s + m.value, 0)
    expect(written).toBe(1 << 20)
    expect(metrics.filter((m) => m.metric === 'backup_proxy_disk_export_duration_seconds' && m.kind === 'histogram')).toHaveLength(1)
  })

  it('cancels a running stream cooperatively: E_CANCELLED and no temporary left', async () => {
    const controller = new AbortController()
    let done = 0
    const running = pool.run(
      'standin.stream',
      { dir: tmp(), name: 'b.bin', sizeBytes: 64 << 20, chunkBytes: 64 << 10, chunkDelayMs: 20 },
      { signal: controller.signal, onProgress: () => void done++ },
    )
    await waitFor('stream to make progress', () => done >= 3)
    expect((await readdir(tmp())).filter((f) => f.startsWith('.b.bin.'))).toHaveLength(1)
    controller.abort(new CancelledError('test cancel'))
    const error = await running.catch((e: unknown) => e)
    expect(error).toBeInstanceOf(CancelledError)
    expect((error as CancelledError).message).toContain('test cancel')
    const files = await readdir(tmp())
    expect(files.filter((f) => f.startsWith('.b.bin.'))).toEqual([])
    expect(files).not.toContain('b.bin')
    // the thread survived the cancel: it still runs tasks
    expect((await pool.run('standin.noop', { value: 7 })).value).toBe(7)
  })

  it('resizes live without dropping a running stream', async () => {
    const running = pool.run('standin.stream', { dir: tmp(), name: 'c.bin', sizeBytes: 2 << 20, chunkBytes: 256 << 10, chunkDelayMs: 30 })
    await waitFor('stream started', () => pool.stats.busy === 1)
    pool.resize(3)
    expect(pool.stats.threads).toBe(3)
    const [a, b, c] = await Promise.all([running, pool.run('standin.noop', { value: 1 }), pool.run('standin.noop', { value: 2 })])
    expect(a.writtenBytes).toBe(2 << 20)
    expect(b.value + c.value).toBe(3)
  })

  it('lays streams out on at most one thread per core, evenly', () => {
    expect(streamLayout(4, 2)).toEqual({ threads: 2, streamsPerThread: 2 })
    expect(streamLayout(6, 2)).toEqual({ threads: 2, streamsPerThread: 3 })
    expect(streamLayout(8, 2)).toEqual({ threads: 2, streamsPerThread: 4 })
    expect(streamLayout(2, 1)).toEqual({ threads: 1, streamsPerThread: 2 })
    expect(streamLayout(2, 2)).toEqual({ threads: 2, streamsPerThread: 1 })
    expect(streamLayout(2, 8)).toEqual({ threads: 2, streamsPerThread: 1 })
    // no even split that keeps a thread per core: one stream per thread
    expect(streamLayout(3, 2)).toEqual({ threads: 3, streamsPerThread: 1 })
    expect(streamLayout(5, 2)).toEqual({ threads: 5, streamsPerThread: 1 })
    expect(streamLayout(1, 2)).toEqual({ threads: 1, streamsPerThread: 1 })
  })

  it('runs 4 streams on 2 cores in 2 threads, a second thread started before a thread takes a second stream', async () => {
    const own = new StreamPool({ threads: 4, cores: 2 })
    const controller = new AbortController()
    const start = (name: string) => own.run('standin.stream', { dir: tmp(), name, sizeBytes: 256 << 20, chunkBytes: 64 << 10, chunkDelayMs: 20 }, { signal: controller.signal }).catch((e: unknown) => e)
    try {
      const first = start('s1.bin')
      await waitFor('first stream started', () => own.stats.busy === 1)
      const second = start('s2.bin')
      await waitFor('second stream started', () => own.stats.busy === 2)
      expect(own.stats.started).toBe(2)
      const rest = [start('s3.bin'), start('s4.bin'), start('s5.bin')]
      await waitFor('four streams at once', () => own.stats.busy === 4)
      expect(own.stats).toMatchObject({ threads: 4, started: 2, busy: 4, queued: 1 })
      controller.abort(new CancelledError('test over'))
      for (const outcome of await Promise.all([first, second, ...rest])) expect(outcome).toBeInstanceOf(CancelledError)
    } finally {
      controller.abort(new CancelledError('test over'))
      await own.close()
    }
  })

  it('destroy: cooperative cancel first, then threads terminated when a task ignores its signal', async () => {
    const own = new StreamPool({ threads: 1 })
    let done = 0
    const stubborn = own.run('standin.stream', { dir: tmp(), name: 'd.bin', sizeBytes: 1 << 30, chunkBytes: 64 << 10, chunkDelayMs: 20, ignoreCancel: true }, { onProgress: () => void done++ })
    const outcome = stubborn.catch((e: unknown) => e)
    await waitFor('stream to make progress', () => done >= 2)
    // the grace is a bound of the ladder, not a synchronisation: the task never ends by itself
    await own.destroy('test shutdown', { graceMs: 500 })
    const error = await outcome
    expect(error).toBeInstanceOf(CancelledError)
    expect((error as CancelledError).message).toMatch(/test shutdown.*terminated/)
    await expect(own.run('standin.noop', { value: 1 })).rejects.toMatchObject({ code: 'E_CANCELLED' })
  })

  it('destroy: a task that honours the cancel ends cooperatively, without termination', async () => {
    const own = new StreamPool({ threads: 1 })
    let done = 0
    const running = own.run('standin.stream', { dir: tmp(), name: 'e.bin', sizeBytes: 1 << 30, chunkBytes: 64 << 10, chunkDelayMs: 20 }, { onProgress: () => void done++ })
    const outcome = running.catch((e: unknown) => e)
    await waitFor('stream to make progress', () => done >= 2)
    await own.destroy('test shutdown', { graceMs: 120_000 })
    const error = await outcome
    expect(error).toBeInstanceOf(CancelledError)
    expect((error as CancelledError).message).not.toMatch(/terminated/)
    expect(await readdir(tmp())).not.toContain('.e.bin')
  })
})

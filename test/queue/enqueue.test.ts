import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, inject, it } from 'vitest'
import { BackupProxyError, TaskInvalidError } from '../../src/common/errors.js'
import { queueKeys } from '../../src/queue/names.js'
import { redisOptions } from '../../src/queue/redis.js'
import { listProxies } from '../../src/queue/registry.js'
import type { TaskInput } from '../../src/queue/tasks.js'
import type { TaskLogEvent } from '../../src/queue/task-log.js'
import { waitFor } from '../helpers/ports.js'
import { useTempDir } from '../helpers/tmp.js'
import { ProcessorRegistry } from '../../src/workers/processors.js'
import { backupTask, client, startProxy, testConfig, uid, VM1, VM2 } from '../workers/fixtures.js'

const redisUrl = inject('redisUrl')
const tmp = useTempDir('bp-enqueue-')
const redis = new Redis(redisUrl)
afterAll(() => redis.quit())

async function counts(config: ReturnType<typeof testConfig>, queue: string): Promise<Record<string, number>> {
  const q = new Queue(queue, { connection: redisOptions(config.redis) })
  try {
    return await q.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed')
  } finally {
    await q.close()
  }
}

describe('enqueue client and proxy runtime (real Redis, stand-in processors)', () => {
  it('enqueue → pick-up → result, with live task-log events and the summary as return value', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') } })
    const c = client(config)
    const proxy = await startProxy(config)
    try {
      const handle = await c.enqueue({ proxy: config.proxy.id }, backupTask({ vms: [VM1, VM2], settings: { standInDir: tmp() } }))
      const live: TaskLogEvent[] = []
      handle.onTaskLog((e) => live.push(e))
      const summary = await handle.result()
      expect(summary).toMatchObject({ status: 'success', kind: 'backup.run', jobId: handle.id, ranBy: proxy.instance })
      expect(summary.tasks?.map((t) => t.status)).toEqual(['success', 'success'])
      expect(summary.result).toMatchObject({ writtenBytes: 2 * (64 << 10) })
      // the durable log has the whole tree: root start, 2 children start+end, root end
      const logged = await handle.taskLog()
      expect(logged.map((e) => e.event)).toEqual(['start', 'start', 'end', 'start', 'end', 'end'])
      await waitFor('live task-log events', () => live.some((e) => e.event === 'end' && e.taskId === summary.id))
    } finally {
      await proxy.shutdown()
      await c.close()
    }
  })

  it('a short attempt carries its events in its summary (no job log write); one with infos is written', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') } })
    const c = client(config)
    const processors = new ProcessorRegistry().register('remote.test', (ctx) => {
      if (ctx.task.remoteId === 'chatty') ctx.root.info('hello', { n: 1 })
      return Promise.resolve({ status: 'success', result: { ok: true } })
    })
    const proxy = await startProxy(config, processors)
    try {
      for (const remoteId of ['quiet', 'chatty']) {
        const handle = await c.enqueue({ proxy: config.proxy.id }, { kind: 'remote.test', remoteId, remote: { url: 'smb://u:pw@WG\\\\h\\s' } })
        const live: TaskLogEvent[] = []
        handle.onTaskLog((e) => live.push(e))
        await handle.ready()
        const summary = await handle.result()
        expect(summary.status).toBe('success')
        const logged = await handle.taskLog()
        const lines = (await c.queue(handle.queue).getJobLogs(handle.id)).logs
        if (remoteId === 'quiet') {
          expect(logged.map((e) => `${e.event}:${e.taskId}`)).toEqual([`start:${summary.id}`, `end:${summary.id}`])
          expect(logged[1]).toMatchObject({ status: 'success', result: { ok: true }, timestamp: summary.end })
          // either carried by the summary (nothing written) or written (the attempt outlived the first flush)
          expect(lines.length).toBe(summary.taskLogInSummary === true ? 0 : 2)
        } else {
          expect(summary.taskLogInSummary).toBeUndefined()
          expect(logged.map((e) => e.event)).toEqual(['start', 'info', 'end'])
          expect(lines.length).toBe(3)
        }
        await waitFor('live events', () => live.length === logged.length)
        expect(live).toEqual(logged)
      }
    } finally {
      await proxy.shutdown()
      await c.close()
    }
  })

  it('keeps credentials sealed at rest in Redis', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') } })
    const c = client(config)
    try {
      const handle = await c.enqueue({ proxy: config.proxy.id }, backupTask())
      const data = await redis.hget(`bull:${handle.queue}:${handle.id}`, 'data')
      expect(data).toContain('bpseal1.')
      expect(data).not.toContain('s3cr3t-Pa55')
      expect(data).not.toContain('file:///tmp/bp-test-remote')
    } finally {
      await c.close()
    }
  })

  it('refuses the same job+schedule while one is waiting or running, accepts it again once finished', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') } })
    const c = client(config)
    try {
      const task = backupTask({ settings: { standInDir: tmp() } })
      const first = await c.enqueue({ proxy: config.proxy.id }, task)
      const dup = await c.enqueue({ proxy: config.proxy.id }, task).catch((e: unknown) => e)
      expect(dup).toBeInstanceOf(BackupProxyError)
      expect((dup as BackupProxyError).code).toBe('E_DUPLICATE_JOB')
      expect((dup as BackupProxyError).fields.existingJobId).toBe(first.id)
      // another schedule of the same job is a different run
      await c.enqueue({ proxy: config.proxy.id }, { ...task, schedule: { id: 'other' } })
      const proxy = await startProxy(config)
      try {
        expect((await first.result()).status).toBe('success')
        const again = await c.enqueue({ proxy: config.proxy.id }, task)
        expect(again.id).not.toBe(first.id)
        expect((await again.result()).status).toBe('success')
      } finally {
        await proxy.shutdown()
      }
    } finally {
      await c.close()
    }
  })

  it('rejects invalid payloads with E_TASK_INVALID before anything reaches Redis', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') } })
    const c = client(config)
    const proxy = await startProxy(config)
    try {
      const bad: unknown[] = [
        { kind: 'nope' },
        { ...backupTask(), job: { ...backupTask().job, id: '../x' } },
        { ...backupTask(), xapis: { x1: { url: 'https://h', credentials: { username: 1, password: 'p' } } } },
        backupTask({ settings: { blob: 'y'.repeat(300 * 1024) } }),
      ]
      for (const task of bad) {
        const error = await c.enqueue({ proxy: config.proxy.id }, task as TaskInput).catch((e: unknown) => e)
        expect(error).toBeInstanceOf(TaskInvalidError)
        expect(typeof (error as TaskInvalidError).fields.field).toBe('string')
      }
      const n = await counts(config, proxy.queues[0]!)
      expect(Object.values(n).reduce((a, b) => a + b, 0)).toBe(0)
    } finally {
      await proxy.shutdown()
      await c.close()
    }
  })

  it('fails a job whose data was not sealed by the client, without retrying', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') } })
    const c = client(config)
    const proxy = await startProxy(config)
    try {
      const q = c.queue(proxy.queues[0]!)
      const raw = await q.add('backup.run', { v: 1, task: backupTask(), enqueuedAt: Date.now() }, { attempts: 3 })
      const summary = await c.handle(proxy.queues[0]!, raw.id!).result()
      expect(summary.status).toBe('failure')
      expect(summary.error?.code).toBe('E_TASK_INVALID')
      expect(summary.error?.message).toContain('xapis.x1.credentials')
      expect((await q.getJob(raw.id!))?.attemptsMade).toBe(1)
    } finally {
      await proxy.shutdown()
      await c.close()
    }
  })

  it('retries a transient failure with backoff, never an authentication failure', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') } })
    const c = client(config)
    const proxy = await startProxy(config)
    try {
      const transient = await c.enqueue({ proxy: config.proxy.id }, backupTask({ settings: { standInDir: tmp(), standInFail: 'transient-once' } }))
      const auth = await c.enqueue({ proxy: config.proxy.id }, backupTask({ settings: { standInDir: tmp(), standInFail: 'auth' } }))
      const [t, a] = await Promise.all([transient.result(), auth.result()])
      expect(t.status).toBe('success')
      expect(t.infos?.map((i) => i.message)).toContain('cleaned up the previous attempt')
      expect(a.status).toBe('failure')
      expect(a.error?.code).toBe('E_XAPI')
      const q = c.queue(proxy.queues[0]!)
      expect((await q.getJob(transient.id))?.attemptsMade).toBe(2)
      expect((await q.getJob(auth.id))?.attemptsMade).toBe(1)
    } finally {
      await proxy.shutdown()
      await c.close()
    }
  })

  it('cancels a job while it streams: interrupted, E_CANCELLED, temporaries removed, nothing published', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') } })
    const c = client(config)
    const proxy = await startProxy(config)
    try {
      const task = backupTask({ settings: { standInDir: tmp(), standInDiskBytes: 256 << 20, standInChunkDelayMs: 20 } })
      const handle = await c.enqueue({ proxy: config.proxy.id }, task)
      let percent = -1
      handle.onProgress((p) => (percent = p.percent))
      await waitFor('the stream to make progress', () => (proxy.poolStats()?.busy ?? 0) === 1 && percent >= 0)
      const dir = join(tmp(), task.job.id)
      expect((await readdir(dir)).some((f) => f.startsWith('.'))).toBe(true)
      expect(await handle.cancel('test says stop')).toBe('signalled')
      const summary = await handle.result()
      expect(summary.status).toBe('interrupted')
      expect(summary.error?.code).toBe('E_CANCELLED')
      expect(summary.error?.message).toContain('test says stop')
      expect(summary.tasks?.[0]?.status).toBe('interrupted')
      expect(await readdir(dir)).toEqual([])
      expect(await redis.exists(queueKeys.lock('bull', handle.queue, handle.id))).toBe(0)
      expect((await c.queue(handle.queue).getJob(handle.id))?.attemptsMade).toBe(1)
    } finally {
      await proxy.shutdown()
      await c.close()
    }
  })

  it('a job whose lock is lost while it streams stops its stream and is left to the lock holder (not failed)', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') }, workers: { lockDurationMs: 2000, stalledIntervalMs: 60_000 } })
    const c = client(config)
    const proxy = await startProxy(config)
    try {
      const task = backupTask({ settings: { standInDir: tmp(), standInDiskBytes: 256 << 20, standInChunkDelayMs: 20 } })
      const handle = await c.enqueue({ proxy: config.proxy.id }, task)
      await waitFor('streaming', () => (proxy.poolStats()?.busy ?? 0) === 1)
      // another worker holds the lock now (as after this proxy was cut off past lockDurationMs)
      await redis.set(queueKeys.lock('bull', handle.queue, handle.id), 'another-worker-token', 'PX', 60_000)
      await waitFor('the stream to stop', () => (proxy.poolStats()?.busy ?? 1) === 0 && proxy.activeJobs === 0)
      const log = await handle.taskLog()
      expect(log.some((e) => e.event === 'info' && e.message.includes('lost the job lock'))).toBe(true)
      expect(log.at(-1)).toMatchObject({ event: 'end', status: 'interrupted', result: { code: 'E_CANCELLED', fields: { abortCause: 'lock-lost' } } })
      // the stream cleaned up its temporary; the job was neither failed nor completed by this proxy
      expect(await readdir(join(tmp(), task.job.id))).toEqual([])
      const job = await c.queue(handle.queue).getJob(handle.id)
      expect(job?.attemptsMade).toBe(0)
      expect(await handle.state()).toBe('active')
      expect(await redis.get(queueKeys.lock('bull', handle.queue, handle.id))).toBe('another-worker-token')
    } finally {
      await proxy.shutdown()
      await c.close()
    }
  })

  it('a cancel that arrives once the work is done does not undo it; one before ends the run interrupted', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') } })
    const c = client(config)
    const running = new Set<string>()
    // the processor has done its work (say, the last VM finished) and waits for the cancel before it returns
    const processors = new ProcessorRegistry().register('remote.test', async (ctx) => {
      running.add(ctx.job.id)
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
      return ctx.task.remoteId === 'done' ? { status: 'success', result: { ok: true } } : { status: 'interrupted' }
    })
    const proxy = await startProxy(config, processors)
    try {
      for (const remoteId of ['done', 'not-done']) {
        const handle = await c.enqueue({ proxy: config.proxy.id }, { kind: 'remote.test', remoteId, remote: { url: 'file:///tmp/bp-test-remote' } })
        await waitFor('the processor to run', () => running.has(handle.id))
        expect(await handle.cancel('too late?')).toBe('signalled')
        const summary = await handle.result()
        if (remoteId === 'done') {
          expect(summary).toMatchObject({ status: 'success', result: { ok: true } })
          expect(summary.error).toBeUndefined()
          expect(summary.infos?.map((i) => i.message)).toEqual(['too late?: requested after the work was done, the run\'s outcome stands'])
        } else {
          expect(summary.status).toBe('interrupted')
          expect(summary.error?.code).toBe('E_CANCELLED')
        }
      }
    } finally {
      await proxy.shutdown()
      await c.close()
    }
  })

  it('cancels a waiting job by removing it; its handle resolves as interrupted', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') } })
    const c = client(config)
    try {
      const handle = await c.enqueue({ proxy: config.proxy.id }, backupTask(), { delayMs: 60_000 })
      expect(await handle.state()).toBe('delayed')
      const result = handle.result()
      expect(await handle.cancel()).toBe('removed')
      const summary = await result
      expect(summary.status).toBe('interrupted')
      expect(summary.error?.code).toBe('E_CANCELLED')
      expect(await handle.state()).toBe('not-found')
    } finally {
      await c.close()
    }
  })

  it('runs higher priority first', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') }, workers: { concurrency: 1 } })
    const c = client(config)
    try {
      const low = await c.enqueue({ proxy: config.proxy.id }, backupTask({ settings: { standInDir: tmp() } }), { priority: 100 })
      const high = await c.enqueue({ proxy: config.proxy.id }, backupTask({ settings: { standInDir: tmp() } }), { priority: 1 })
      const proxy = await startProxy(config)
      try {
        const [l, h] = await Promise.all([low.result(), high.result()])
        expect(h.start).toBeLessThanOrEqual(l.start)
        expect(h.end!).toBeLessThanOrEqual(l.start)
      } finally {
        await proxy.shutdown()
      }
    } finally {
      await c.close()
    }
  })

  it('two proxies on one pool split 20 jobs, and status lists both with their load', async () => {
    const pool = uid('pool')
    const a = testConfig(redisUrl, { proxy: { id: uid('pa'), pools: [pool] }, workers: { concurrency: 2 } })
    const b = testConfig(redisUrl, { proxy: { id: uid('pb'), pools: [pool] }, workers: { concurrency: 2 } })
    const c = client(a)
    const [pa, pb] = await Promise.all([startProxy(a), startProxy(b)])
    try {
      const live = await listProxies(redis, 'bull', 500)
      expect(live.map((p) => p.instance)).toEqual(expect.arrayContaining([pa.instance, pb.instance]))
      const handles = await Promise.all(
        Array.from({ length: 20 }, () => c.enqueue({ pool }, backupTask({ settings: { standInDir: tmp(), standInDiskBytes: 256 << 10, standInChunkDelayMs: 5 } }))),
      )
      const summaries = await Promise.all(handles.map((h) => h.result()))
      expect(summaries.every((s) => s.status === 'success')).toBe(true)
      const byProxy = new Map<string, number>()
      for (const s of summaries) byProxy.set(s.ranBy!, (byProxy.get(s.ranBy!) ?? 0) + 1)
      expect(byProxy.get(pa.instance) ?? 0).toBeGreaterThan(0)
      expect(byProxy.get(pb.instance) ?? 0).toBeGreaterThan(0)
      expect((byProxy.get(pa.instance) ?? 0) + (byProxy.get(pb.instance) ?? 0)).toBe(20)
    } finally {
      await Promise.all([pa.shutdown(), pb.shutdown()])
      await c.close()
    }
  })

  it('scales threads and concurrency live through the scale channel', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') } })
    const c = client(config)
    const proxy = await startProxy(config)
    try {
      const handle = await c.enqueue({ proxy: config.proxy.id }, backupTask({ settings: { standInDir: tmp(), standInDiskBytes: 4 << 20, standInChunkDelayMs: 10 } }))
      await waitFor('job running', () => proxy.activeJobs === 1)
      expect(await c.scale({ proxyId: config.proxy.id, threads: 2, concurrency: 3 })).toBeGreaterThan(0)
      await waitFor('rescaled', () => proxy.heartbeat().threads === 2 && proxy.heartbeat().concurrency === 3)
      // the running job was not dropped
      expect((await handle.result()).status).toBe('success')
      const beat = (await listProxies(redis, 'bull', 500)).find((p) => p.instance === proxy.instance)
      expect(beat).toMatchObject({ threads: 2, concurrency: 3 })
    } finally {
      await proxy.shutdown()
      await c.close()
    }
  })

  it('shutdown drains: a job past the grace period is cancelled cleanly and goes back to wait, nothing locked', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') }, workers: { shutdownGraceMs: 300 } })
    const c = client(config)
    const proxy = await startProxy(config)
    try {
      const task = backupTask({ settings: { standInDir: tmp(), standInDiskBytes: 256 << 20, standInChunkDelayMs: 20 } })
      const handle = await c.enqueue({ proxy: config.proxy.id }, task)
      await waitFor('streaming', () => (proxy.poolStats()?.busy ?? 0) === 1)
      await proxy.shutdown()
      expect(proxy.state).toBe('stopped')
      expect(await handle.state()).toBe('waiting')
      expect(await redis.exists(queueKeys.lock('bull', handle.queue, handle.id))).toBe(0)
      expect((await readdir(join(tmp(), task.job.id))).filter((f) => f.startsWith(`.${VM1}.bin.`))).toEqual([])
      const log = await handle.taskLog()
      expect(log.at(-1)).toMatchObject({ event: 'end', status: 'interrupted' })
      // a restarted proxy runs it to the end
      await c.cancel(handle.queue, handle.id)
    } finally {
      await proxy.shutdown()
      await c.close()
    }
  })
})

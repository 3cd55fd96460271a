/**
 * Start-up order and stopping: `serve` binds its HTTP port and passes every start-up check before it takes
 * a job (a bind failure leaves queued jobs untouched: no attempt started), and a proxy that is stopping
 * takes no job (a zero-grace stop hands back what runs and starts nothing more). In-process, real Redis.
 */
import { createServer, type Server } from 'node:net'
import { Job } from 'bullmq'
import { afterAll, describe, expect, inject, it } from 'vitest'
import { silentLogger } from '../../src/common/log.js'
import type { TaskResult } from '../../src/queue/task-log.js'
import { ProcessorRegistry } from '../../src/workers/processors.js'
import type { ProxyRuntime } from '../../src/workers/proxy.js'
import { serve } from '../../src/workers/serve.js'
import { waitFor } from '../helpers/ports.js'
import { backupTask, client, startProxy, testConfig, uid } from './fixtures.js'

const redisUrl = inject('redisUrl')
const servers: Server[] = []
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
})

/** A processor that counts its calls (and those made once the test began stopping) and runs until its signal aborts. */
function blockingRegistry(calls: { n: number; whileStopping: number; stopping: boolean }): ProcessorRegistry {
  return new ProcessorRegistry().register('backup.run', async (ctx): Promise<TaskResult> => {
    calls.n++
    if (calls.stopping) calls.whileStopping++
    await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
    throw ctx.signal.reason
  })
}

describe('serve start-up order and stopping', () => {
  it('an HTTP port already in use stops serve before any job is taken', async () => {
    const busy = createServer()
    servers.push(busy)
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
    const port = (busy.address() as { port: number }).port
    const config = { ...testConfig(redisUrl, { proxy: { id: uid('pb') } }), http: { listen: `127.0.0.1:${port}` } }
    const c = client(config)
    try {
      const handles = await Promise.all([1, 2, 3].map(() => c.enqueue({ proxy: config.proxy.id }, backupTask())))
      const calls = { n: 0, whileStopping: 0, stopping: false }
      await expect(serve({ config, logger: silentLogger, handleSignals: false, processors: blockingRegistry(calls) })).rejects.toThrow(/EADDRINUSE|in use/)
      expect(calls.n).toBe(0)
      for (const h of handles) {
        const job = await Job.fromId(c.queue(h.queue), h.id)
        expect(await job?.getState()).toBe('waiting')
        expect(job?.attemptsStarted).toBe(0)
      }
      await Promise.all(handles.map((h) => h.cancel()))
    } finally {
      await c.close()
    }
  })

  it('a zero-grace stop hands running jobs back and takes no other job meanwhile', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('pz') }, workers: { concurrency: 2 } })
    const c = client(config)
    let runtime: ProxyRuntime | undefined
    const calls = { n: 0, whileStopping: 0, stopping: false }
    try {
      const handles = []
      for (let i = 0; i < 12; i++) handles.push(await c.enqueue({ proxy: config.proxy.id }, backupTask()))
      runtime = await startProxy(config, blockingRegistry(calls))
      await waitFor('two jobs running', () => calls.n === 2, 30_000)
      calls.stopping = true
      await runtime.shutdown({ graceMs: 0 })
      expect(calls.whileStopping).toBe(0)
      expect(calls.n).toBe(2)
      let attempts = 0
      for (const h of handles) {
        const job = await Job.fromId(c.queue(h.queue), h.id)
        expect(await job?.getState()).toBe('waiting')
        attempts += job?.attemptsStarted ?? 0
      }
      expect(attempts).toBe(2)
      await Promise.all(handles.map((h) => h.cancel()))
    } finally {
      await runtime?.shutdown({ force: true })
      await c.close()
    }
  })
})

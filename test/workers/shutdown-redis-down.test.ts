/**
 * A proxy asked to stop while its Redis is down stops (it used to wait for Redis forever: every write of
 * a graceful stop sat in ioredis's offline queue). With a job running when Redis went down, the stop
 * gives the job its grace period, then drops the connections; the job's outcome could not be written,
 * so once Redis is back (AOF) another proxy takes it again as stalled and it succeeds, completed once.
 */
import { describe, expect, it } from 'vitest'
import { EnqueueClient } from '../../src/queue/client.js'
import { startRedis } from '../services/redis.js'
import { waitFor } from '../helpers/ports.js'
import { useTempDir } from '../helpers/tmp.js'
import { completions, RunCounter, smallTask } from '../queue/modes.js'
import { sealKey, startProxy, testConfig, uid } from './fixtures.js'

const tmp = useTempDir('bp-redis-down-')

describe('shutdown while Redis is down', () => {
  it('a proxy with no job running stops while Redis is down', async () => {
    const server = await startRedis()
    try {
      const proxy = await startProxy(testConfig(server.url, { proxy: { id: uid('p') } }))
      await server.stop()
      await waitFor('the proxy to see Redis gone', () => proxy.redis.status !== 'ready')
      await proxy.shutdown()
      expect(proxy.state).toBe('stopped')
      expect(proxy.redis.status).toBe('end')
    } finally {
      await server.destroy()
    }
  })

  it('a job running when Redis goes down: the proxy stops after the grace period; once Redis is back the job runs again and completes once', async () => {
    const server = await startRedis({ aof: true })
    const config = testConfig(server.url, { proxy: { id: uid('p') } })
    const counter = new RunCounter()
    const c = new EnqueueClient({ redis: config.redis, sealKey })
    try {
      const first = await counter.proxy(config)
      counter.hold()
      const handle = await c.enqueue({ proxy: config.proxy.id }, smallTask(tmp()))
      await waitFor('the job running', () => first.activeJobs > 0)
      await server.stop()
      await waitFor('the proxy to see Redis gone', () => first.redis.status !== 'ready')
      await first.shutdown({ graceMs: 200 })
      expect(first.state).toBe('stopped')
      counter.release()
      await server.restart()
      const second = await counter.proxy(config)
      try {
        expect((await handle.result()).status).toBe('success')
        expect((await completions(c, [handle.queue])).get(handle.id)).toBe(1)
        expect(counter.starts.get(handle.id)).toBe(2)
      } finally {
        await second.shutdown()
      }
    } finally {
      await c.close()
      await server.destroy()
    }
  })
})

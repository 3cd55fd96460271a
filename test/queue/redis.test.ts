/** Redis durability and safety: AOF restart keeps queued jobs; a non-noeviction policy is refused. */
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { BackupProxyError } from '../../src/common/errors.js'
import { redisOptions } from '../../src/queue/redis.js'
import { startRedis } from '../services/redis.js'
import { waitFor } from '../helpers/ports.js'
import { useTempDir } from '../helpers/tmp.js'
import { backupTask, client, startProxy, testConfig, uid } from '../workers/fixtures.js'

const tmp = useTempDir('bp-redis-')

describe('Redis', () => {
  it('a Redis restart (AOF) between enqueue and pick-up loses no job', async () => {
    const server = await startRedis({ aof: true })
    try {
      const config = testConfig(server.url, { proxy: { id: uid('p') } })
      const c = client(config)
      const handle = await c.enqueue({ proxy: config.proxy.id }, backupTask({ settings: { standInDir: tmp() } }))
      await c.close()
      await server.stop()
      await server.restart()
      const c2 = client(config)
      const proxy = await startProxy(config)
      try {
        const summary = await c2.handle(handle.queue, handle.id).result()
        expect(summary.status).toBe('success')
      } finally {
        await proxy.shutdown()
        await c2.close()
      }
    } finally {
      await server.destroy()
    }
  })

  it('a running proxy rides out a Redis restart and keeps taking jobs', async () => {
    const server = await startRedis({ aof: true })
    try {
      const config = testConfig(server.url, { proxy: { id: uid('p') } })
      const proxy = await startProxy(config)
      const c = client(config)
      try {
        expect((await (await c.enqueue({ proxy: config.proxy.id }, backupTask({ settings: { standInDir: tmp() } }))).result()).status).toBe('success')
        await server.stop()
        await server.restart()
        const handle = await c.enqueue({ proxy: config.proxy.id }, backupTask({ settings: { standInDir: tmp() } }))
        expect((await handle.result()).status).toBe('success')
      } finally {
        await proxy.shutdown()
        await c.close()
      }
    } finally {
      await server.destroy()
    }
  })

  it('a job whose lock cannot be renewed for lockDurationMs (Redis not answering) stops its stream', async () => {
    const server = await startRedis()
    const admin = new Redis(server.url)
    try {
      const config = testConfig(server.url, { proxy: { id: uid('p') }, workers: { lockDurationMs: 1500, stalledIntervalMs: 60_000 } })
      const proxy = await startProxy(config)
      const c = client(config)
      try {
        const task = backupTask({ settings: { standInDir: tmp(), standInDiskBytes: 256 << 20, standInChunkDelayMs: 20 } })
        await c.enqueue({ proxy: config.proxy.id }, task)
        await waitFor('streaming', () => (proxy.poolStats()?.busy ?? 0) === 1)
        // Redis stops answering writes (lock renewals) while connections stay up; a stopped server would
        // also do, but closing BullMQ workers right after a reconnect can hang (docs/queue.md)
        await admin.call('CLIENT', 'PAUSE', '30000', 'WRITE')
        // past lockDurationMs without a renewal the lock must be taken as lost: the stream stops while Redis
        // is still paused (no refused renewal has come back to say so)
        await waitFor('the stream to stop', () => (proxy.poolStats()?.busy ?? 1) === 0)
        expect(await readdir(join(tmp(), task.job.id))).toEqual([])
        await admin.call('CLIENT', 'UNPAUSE')
        await waitFor('the attempt to end', () => proxy.activeJobs === 0)
      } finally {
        await admin.call('CLIENT', 'UNPAUSE')
        await proxy.shutdown()
        await c.close()
      }
    } finally {
      admin.disconnect()
      await server.destroy()
    }
  })

  it('refuses to start a proxy on a Redis whose eviction policy is not noeviction', async () => {
    const server = await startRedis({ maxmemoryPolicy: 'allkeys-lru' })
    try {
      const config = testConfig(server.url, { proxy: { id: uid('p') } })
      const error = await startProxy(config).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(BackupProxyError)
      expect((error as BackupProxyError).code).toBe('E_REDIS_EVICTION')
      expect((error as BackupProxyError).message).toMatch(/maxmemory-policy "allkeys-lru".*noeviction/)
    } finally {
      await server.destroy()
    }
  })

  it('builds connection options for BullMQ: no per-request retry limit, ACL user, TLS with rediss://', () => {
    const base = testConfig('redis://127.0.0.1:6379').redis
    const o = redisOptions({ ...base, url: 'rediss://app:p%40ss@redis.example:6380/2' })
    expect(o).toMatchObject({ host: 'redis.example', port: 6380, db: 2, username: 'app', password: 'p@ss', maxRetriesPerRequest: null })
    expect(o.tls).toMatchObject({ rejectUnauthorized: true, servername: 'redis.example' })
    expect(redisOptions({ ...base, username: 'u2', password: 'pw2' })).toMatchObject({ username: 'u2', password: 'pw2' })
    expect(o.retryStrategy(1)).toBeGreaterThan(0)
    expect(o.retryStrategy(50)).toBeLessThanOrEqual(6000)
  })
})

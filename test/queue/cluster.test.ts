/**
 * Redis Cluster for real: three masters started by the test (test/services/redis-cluster.ts). Jobs across
 * proxy and pool queues run; every queue's keys live in one slot; a node restarted while jobs run loses
 * none and completes none twice; wrong modes and eviction policies are refused with coded errors.
 */
import { Cluster, Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BackupProxyError } from '../../src/common/errors.js'
import { EnqueueClient } from '../../src/queue/client.js'
import { poolQueue, proxyQueue } from '../../src/queue/names.js'
import { checkRedis, createRedis } from '../../src/queue/redis.js'
import { startRedisCluster, type RedisClusterService } from '../services/redis-cluster.js'
import { startRedis } from '../services/redis.js'
import { waitFor } from '../helpers/ports.js'
import { useTempDir } from '../helpers/tmp.js'
import { client, sealKey, startProxy, uid } from '../workers/fixtures.js'
import { expectEachSucceededOnce, modeConfig, RunCounter, smallTask } from './modes.js'

const tmp = useTempDir('bp-cluster-')
let cluster: RedisClusterService

beforeAll(async () => {
  cluster = await startRedisCluster()
})
afterAll(async () => {
  await cluster?.destroy()
})

const clusterRedis = () => ({ mode: 'cluster' as const, url: 'redis://127.0.0.1:6379', nodes: cluster.nodes })

/** Where each key of `queue` lives: slot and node. */
async function queueSlots(c: Cluster, prefix: string, queue: string): Promise<{ slots: Set<number>; nodes: Set<string>; keys: number }> {
  const slots = new Set<number>()
  const nodes = new Set<string>()
  let keys = 0
  for (const node of c.nodes('master')) {
    const found = await node.keys(`${prefix}:${queue}:*`)
    if (found.length > 0) nodes.add(`${node.options.host}:${node.options.port}`)
    keys += found.length
    for (const k of found) slots.add(Number(await node.call('CLUSTER', 'KEYSLOT', k)))
  }
  return { slots, nodes, keys }
}

describe('Redis Cluster', () => {
  it('runs a batch across proxy and pool queues on 3 masters; each queue keeps its keys in one slot', async () => {
    const [a, b] = [uid('pa'), uid('pb')]
    const ids = [uid('p1'), uid('p2'), uid('p3')]
    const counter = new RunCounter()
    const pools = [[a], [a, b], [b]]
    const proxies = await Promise.all(ids.map((id, i) => counter.proxy(modeConfig(clusterRedis(), { id, pools: pools[i]! }))))
    const c = new EnqueueClient({ redis: modeConfig(clusterRedis(), { id: 'client' }).redis, sealKey, backoffMs: 100 })
    try {
      const targets = [...ids.map((proxy) => ({ proxy })), { pool: a }, { pool: b }]
      const handles = []
      for (let i = 0; i < 4; i++) for (const t of targets) handles.push(await c.enqueue(t, smallTask(tmp())))
      await expectEachSucceededOnce(handles, counter)
      const redis = (await c.redis()) as Cluster
      const usedSlots = new Set<number>()
      for (const name of [...ids.map(proxyQueue), poolQueue(a), poolQueue(b)]) {
        const where = await queueSlots(redis, 'bull', name)
        expect(where.keys, name).toBeGreaterThan(0)
        expect(where.slots.size, `${name} slots`).toBe(1)
        expect(where.nodes.size, `${name} nodes`).toBe(1)
        usedSlots.add([...where.slots][0]!)
      }
      // five queues, five different tags: they spread over slots (not all in one like a {bull} prefix)
      expect(usedSlots.size).toBeGreaterThan(1)
      // each proxy queue's jobs ran on its proxy; each pool's on one of its members
      for (const h of handles) {
        const job = await c.queue(h.queue).getJob(h.id)
        const by = job?.processedBy ?? ''
        const owner = h.queue.startsWith('{proxy.') ? [h.queue.slice(7, -1)] : h.queue === poolQueue(a) ? [ids[0]!, ids[1]!] : [ids[1]!, ids[2]!]
        expect(owner.some((id) => by.startsWith(`${id}@`)), `${h.queue} ${h.id} run by ${by}`).toBe(true)
      }
    } finally {
      await Promise.all(proxies.map((p) => p.shutdown()))
      await c.close()
    }
  })

  it('a master restarted while jobs run and wait: no job lost, none completed twice, all reconnect', async () => {
    const ids = [uid('p1'), uid('p2')]
    const pool = uid('pool')
    const counter = new RunCounter()
    const proxies = await Promise.all(ids.map((id) => counter.proxy(modeConfig(clusterRedis(), { id, pools: [pool] }))))
    const c = new EnqueueClient({ redis: modeConfig(clusterRedis(), { id: 'client' }).redis, sealKey, backoffMs: 100 })
    try {
      const handles = []
      // the jobs wait (locked) until released: both proxies certainly run some during the restart
      counter.hold()
      for (let i = 0; i < 12; i++) handles.push(await c.enqueue({ pool }, smallTask(tmp(), 20)))
      await waitFor('jobs running', () => proxies.every((p) => p.activeJobs > 0))
      // the master that holds the pool's slot
      const redis = (await c.redis()) as Cluster
      const slot = Number(await redis.call('CLUSTER', 'KEYSLOT', poolQueue(pool)))
      const shards = (await redis.call('CLUSTER', 'SLOTS')) as [number, number, [string, number]][]
      const port = shards.find(([lo, hi]) => slot >= lo && slot <= hi)![2][1]
      const index = cluster.ports.indexOf(port)
      await cluster.stop(index)
      await cluster.start(index)
      counter.release()
      // the client enqueues after the restart on the same connection, to every queue
      handles.push(await c.enqueue({ pool }, smallTask(tmp())))
      for (const id of ids) handles.push(await c.enqueue({ proxy: id }, smallTask(tmp())))
      await expectEachSucceededOnce(handles, counter)
      expect(proxies.every((p) => p.state === 'running')).toBe(true)
      counter.report('cluster master restart', { restartedPort: port })
    } finally {
      await Promise.all(proxies.map((p) => p.shutdown()))
      await c.close()
    }
  })

  it('ACL user: jobs run as that user on every node; a wrong password is refused (E_REDIS)', async () => {
    const user = uid('acl')
    const admins = cluster.ports.map((port) => new Redis({ port, host: '127.0.0.1' }))
    try {
      for (const a of admins) await a.call('ACL', 'SETUSER', user, 'on', '>acl-Pa55', '~*', '&*', '+@all')
      const id = uid('p')
      const acl = { ...clusterRedis(), username: user, password: 'acl-Pa55' }
      const counter = new RunCounter()
      const proxy = await counter.proxy(modeConfig(acl, { id }))
      const c = new EnqueueClient({ redis: modeConfig(acl, { id: 'client' }).redis, sealKey })
      try {
        await expectEachSucceededOnce([await c.enqueue({ proxy: id }, smallTask(tmp()))], counter)
        const names = (await admins[0]!.call('CLIENT', 'LIST')) as string
        expect(names).toContain(`user=${user}`)
      } finally {
        await proxy.shutdown()
        await c.close()
      }
      const wrong = modeConfig({ ...acl, password: 'wrong' }, { id: uid('p') })
      const r = createRedis(wrong.redis)
      r.on('error', () => undefined)
      try {
        const error = await checkRedis(r, wrong.redis).catch((e: unknown) => e)
        expect((error as BackupProxyError).code).toBe('E_REDIS')
      } finally {
        r.disconnect()
      }
    } finally {
      for (const a of admins) {
        await a.call('ACL', 'DELUSER', user)
        a.disconnect()
      }
    }
  })

  it('a cluster node given in single mode: E_REDIS_MODE saying to set mode cluster (proxy, enqueue, check)', async () => {
    const config = modeConfig({ url: `redis://${cluster.nodes[0]}` }, { id: uid('p') })
    const error = await startProxy(config).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(BackupProxyError)
    expect((error as BackupProxyError).code).toBe('E_REDIS_MODE')
    expect((error as BackupProxyError).message).toMatch(/redis\.mode: cluster/)
    // the enqueue client meets a MOVED reply for most queues: the same code
    const c = client(config)
    try {
      const errors: unknown[] = []
      for (let i = 0; i < 6; i++) errors.push(await c.enqueue({ proxy: uid('x') }, smallTask(tmp())).then(() => undefined, (e: unknown) => e))
      const moved = errors.filter((e) => e !== undefined)
      expect(moved.length).toBeGreaterThan(0)
      for (const e of moved) expect((e as BackupProxyError).code).toBe('E_REDIS_MODE')
    } finally {
      await c.close()
    }
  })

  it('mode cluster against a plain Redis: E_REDIS_MODE saying to set mode single', async () => {
    const server = await startRedis()
    const config = modeConfig({ mode: 'cluster', url: server.url }, { id: uid('p') })
    const r = createRedis(config.redis)
    r.on('error', () => undefined)
    try {
      const error = await checkRedis(r, config.redis).catch((e: unknown) => e)
      expect((error as BackupProxyError).code).toBe('E_REDIS_MODE')
      expect((error as BackupProxyError).message).toMatch(/redis\.mode: single/)
    } finally {
      r.disconnect()
      await server.destroy()
    }
  })

  it('refuses a cluster where one node has an evicting maxmemory-policy (E_REDIS_EVICTION naming it)', async () => {
    const node = new Redis({ port: cluster.ports[2]!, host: '127.0.0.1' })
    await node.config('SET', 'maxmemory-policy', 'volatile-lru')
    const config = modeConfig(clusterRedis(), { id: uid('p') })
    try {
      const error = await startProxy(config).catch((e: unknown) => e)
      expect((error as BackupProxyError).code).toBe('E_REDIS_EVICTION')
      expect((error as BackupProxyError).message).toContain(`127.0.0.1:${cluster.ports[2]}`)
    } finally {
      await node.config('SET', 'maxmemory-policy', 'noeviction')
      node.disconnect()
    }
  })
})

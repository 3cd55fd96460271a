/**
 * Redis Cluster over TLS with an ACL user, for real: three masters started by the test serving TLS only
 * (`port 0`, `tls-port`, `tls-cluster yes`), with a certificate signed by a CA the test makes (openssl),
 * the default user off and one ACL user; each node announces a hostname that never resolves, so clients
 * reach the nodes only through `redis.natMap`. Jobs run through proxies and the enqueue client as that
 * user; a wrong password or a missing CA is refused with E_REDIS, and no secret shows in the error.
 */
import { Cluster, Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EnqueueClient } from '../../src/queue/client.js'
import { checkRedis, createRedis } from '../../src/queue/redis.js'
import { startRedisCluster, type RedisClusterService } from '../services/redis-cluster.js'
import { adminOptions, makeTestCerts } from '../services/redis-secure.js'
import { waitFor } from '../helpers/ports.js'
import { makeTempDir, useTempDir } from '../helpers/tmp.js'
import { sealKey, startProxy, uid } from '../workers/fixtures.js'
import { codedError, expectEachSucceededOnce, modeConfig, RunCounter, smallTask } from './modes.js'

const tmp = useTempDir('bp-cluster-tls-')
const PASSWORD = 'tls-Cluster-Pa55'
/** what must never appear in an error: our password and the wrong one the tests try */
const SECRETS = [PASSWORD, 'wrong-Pa55']
const acl = { user: 'bp-cluster-user', password: PASSWORD }
let certsDir: Awaited<ReturnType<typeof makeTempDir>>
let cluster: RedisClusterService

beforeAll(async () => {
  certsDir = await makeTempDir('bp-cluster-certs-')
  cluster = await startRedisCluster({ security: { certs: await makeTestCerts(certsDir.path), acl }, announceHostnames: true })
})
afterAll(async () => {
  await cluster?.destroy()
  await certsDir?.remove()
})

/** The proxy's config: seeds by IP, the announced names mapped back, the ACL user, TLS with the test CA. */
const tlsCluster = (password = PASSWORD) => ({
  mode: 'cluster' as const,
  url: 'rediss://unused',
  nodes: cluster.nodes,
  natMap: Object.fromEntries(cluster.announced.map((a, i) => [a, cluster.nodes[i]!])),
  username: acl.user,
  password,
  tlsCaFile: cluster.security.certs!.ca,
})

describe('Redis Cluster over TLS with an ACL user', () => {
  it('runs jobs across proxy and pool queues and a scale message through natMap as the ACL user; the nodes serve TLS only', async () => {
    const pool = uid('pool')
    const ids = [uid('p1'), uid('p2')]
    const counter = new RunCounter()
    const proxies = await Promise.all(ids.map((id) => counter.proxy(modeConfig(tlsCluster(), { id, pools: [pool] }))))
    const c = new EnqueueClient({ redis: modeConfig(tlsCluster(), { id: 'client' }).redis, sealKey, backoffMs: 100 })
    try {
      const handles = []
      for (let i = 0; i < 3; i++) for (const t of [{ pool }, ...ids.map((proxy) => ({ proxy }))]) handles.push(await c.enqueue(t, smallTask(tmp())))
      await expectEachSucceededOnce(handles, counter)
      // pub/sub too (scale and cancel messages): published on one node, heard by the proxy's subscriber
      await c.scale({ proxyId: ids[0]!, concurrency: 3 })
      await waitFor('the proxy rescaled by a message over the cluster', () => proxies[0]!.config.workers.concurrency === 3, 30_000)
      expect(proxies[1]!.config.workers.concurrency).toBe(2)
      // the client's cluster connection went through natMap to every master, as the ACL user
      const redis = (await c.redis()) as Cluster
      expect(redis.nodes('master').map((n) => `${n.options.host}:${n.options.port}`).sort()).toEqual([...cluster.nodes].sort())
      for (const port of cluster.ports) {
        const admin = new Redis({ ...adminOptions(cluster.security), host: '127.0.0.1', port })
        try {
          expect(await admin.config('GET', 'port')).toEqual(['port', '0'])
          const clients = (await admin.call('CLIENT', 'LIST')) as string
          expect(clients, `node ${port}`).toContain(`user=${acl.user}`)
          expect(clients, `node ${port}`).not.toMatch(/user=default/)
        } finally {
          admin.disconnect()
        }
      }
    } finally {
      await Promise.all(proxies.map((p) => p.shutdown()))
      await c.close()
    }
  })

  it('a wrong password: E_REDIS from the proxy, the enqueue client and the check, with no secret in it', async () => {
    const wrong = modeConfig(tlsCluster('wrong-Pa55'), { id: uid('p') })
    const fromProxy = await codedError(() => startProxy(wrong), 'E_REDIS', SECRETS)
    expect(fromProxy.message).toMatch(/WRONGPASS|invalid username-password/)
    const c = new EnqueueClient({ redis: wrong.redis, sealKey })
    try {
      await codedError(() => c.enqueue({ proxy: uid('x') }, smallTask(tmp())), 'E_REDIS', SECRETS)
    } finally {
      await c.close()
    }
    const r = createRedis(wrong.redis)
    r.on('error', () => undefined)
    try {
      await codedError(() => checkRedis(r, wrong.redis), 'E_REDIS', SECRETS)
    } finally {
      r.disconnect()
    }
  })

  it('without the CA the node certificates are refused: E_REDIS naming the certificate', async () => {
    const { tlsCaFile: _ca, ...untrusted } = tlsCluster()
    const config = modeConfig(untrusted, { id: uid('p') })
    const error = await codedError(() => startProxy(config), 'E_REDIS', SECRETS)
    expect(error.message).toMatch(/certificate/)
  })
})

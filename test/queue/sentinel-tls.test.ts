/**
 * Sentinel over TLS with ACL users, for real: a master, a replica and three sentinels started by the test;
 * the data nodes serve TLS only (`port 0`, `tls-port`, replication over TLS), the sentinels serve TLS and
 * plain TCP, all with a certificate signed by a CA the test makes (openssl), the default user off and one
 * ACL user (on the sentinels too: `sentinelUsername`/`sentinelPassword`). Jobs run through proxies and
 * the enqueue client with TLS to both, or TLS to the data nodes only (`sentinelTls: false`); the master
 * killed while jobs run is followed over TLS; a wrong password (data nodes or sentinels) is E_REDIS with
 * no secret in it. A reconnecting connection's error is passed over while the sentinels name a master
 * that answers (the stale end of a round of sentinels begun before a failover), and is final otherwise.
 */
import { EventEmitter } from 'node:events'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EnqueueClient } from '../../src/queue/client.js'
import { readyRedis, type RedisClient } from '../../src/queue/redis.js'
import { startRedisSentinel, type RedisSentinelService } from '../services/redis-sentinel.js'
import { adminOptions, makeTestCerts } from '../services/redis-secure.js'
import { waitFor } from '../helpers/ports.js'
import { makeTempDir, useTempDir } from '../helpers/tmp.js'
import { sealKey, startProxy, uid } from '../workers/fixtures.js'
import { codedError, expectEachSucceededOnce, modeConfig, RunCounter, smallTask } from './modes.js'

const tmp = useTempDir('bp-sentinel-tls-')
const PASSWORD = 'tls-Sentinel-Pa55'
/** what must never appear in an error: our password and the wrong one the tests try */
const SECRETS = [PASSWORD, 'wrong-Pa55']
const acl = { user: 'bp-sentinel-user', password: PASSWORD }
let certsDir: Awaited<ReturnType<typeof makeTempDir>>
let sentinel: RedisSentinelService

beforeAll(async () => {
  certsDir = await makeTempDir('bp-sentinel-certs-')
  sentinel = await startRedisSentinel({ security: { certs: await makeTestCerts(certsDir.path), acl } })
})
afterAll(async () => {
  await sentinel?.destroy()
  await certsDir?.remove()
})

/** The proxy's config: TLS (the test CA) and the ACL user for the data nodes and for the sentinels. */
const tlsSentinel = (o: { password?: string; sentinelPassword?: string } = {}) => ({
  mode: 'sentinel' as const,
  url: 'rediss://unused:6379',
  sentinels: sentinel.sentinels,
  sentinelName: sentinel.name,
  username: acl.user,
  password: o.password ?? PASSWORD,
  sentinelUsername: acl.user,
  sentinelPassword: o.sentinelPassword ?? PASSWORD,
  tlsCaFile: sentinel.security.certs!.ca,
})

/** The master's clients, read as the ACL user over TLS. */
async function masterClients(): Promise<string> {
  const master = new Redis({ ...adminOptions(sentinel.security), host: '127.0.0.1', port: await sentinel.masterPort() })
  try {
    return (await master.call('CLIENT', 'LIST')) as string
  } finally {
    master.disconnect()
  }
}

/** Runs a proxy-queue and a pool job through `redis`, with one proxy and one enqueue client. */
async function runJobs(redis: ReturnType<typeof tlsSentinel> | (Omit<ReturnType<typeof tlsSentinel>, 'sentinels'> & { sentinels: string[]; sentinelTls: boolean })): Promise<void> {
  const id = uid('p')
  const pool = uid('pool')
  const counter = new RunCounter()
  const proxy = await counter.proxy(modeConfig(redis, { id, pools: [pool] }))
  const c = new EnqueueClient({ redis: modeConfig(redis, { id: 'client' }).redis, sealKey })
  try {
    const handles = [await c.enqueue({ proxy: id }, smallTask(tmp())), await c.enqueue({ pool }, smallTask(tmp())), await c.enqueue({ pool }, smallTask(tmp()))]
    await expectEachSucceededOnce(handles, counter)
    const clients = await masterClients()
    expect(clients).toContain(`name=backup-proxy:${id}@`)
    expect(clients).toContain(`user=${acl.user}`)
    expect(clients).not.toMatch(/user=default/)
  } finally {
    await proxy.shutdown()
    await c.close()
  }
}

describe('Sentinel over TLS with ACL users', () => {
  it('runs jobs with TLS and the ACL user to the sentinels and the master', async () => {
    await runJobs(tlsSentinel())
  })

  it('runs jobs with TLS to the master only (sentinelTls: false, the sentinels on plain TCP)', async () => {
    await runJobs({ ...tlsSentinel(), sentinels: sentinel.plainSentinelPorts.map((p) => `127.0.0.1:${p}`), sentinelTls: false })
  })

  it('a wrong password for the master or for the sentinels: E_REDIS with no secret in it', async () => {
    const master = await codedError(() => startProxy(modeConfig(tlsSentinel({ password: 'wrong-Pa55' }), { id: uid('p') })), 'E_REDIS', SECRETS)
    expect(master.message).toMatch(/WRONGPASS|invalid username-password/)
    const sentinels = await codedError(() => startProxy(modeConfig(tlsSentinel({ sentinelPassword: 'wrong-Pa55' }), { id: uid('p') })), 'E_REDIS', SECRETS)
    expect(sentinels.message).toMatch(/no sentinel answered.*WRONGPASS/)
    const c = new EnqueueClient({ redis: modeConfig(tlsSentinel({ password: 'wrong-Pa55' }), { id: 'client' }).redis, sealKey })
    try {
      await codedError(() => c.enqueue({ proxy: uid('x') }, smallTask(tmp())), 'E_REDIS', SECRETS)
    } finally {
      await c.close()
    }
  })

  it('the master killed while jobs run: everyone follows the new master over TLS; none lost, none completed twice', async () => {
    const ids = [uid('p1'), uid('p2')]
    const pool = uid('pool')
    const counter = new RunCounter()
    const proxies = await Promise.all(ids.map((id) => counter.proxy(modeConfig(tlsSentinel(), { id, pools: [pool] }))))
    const c = new EnqueueClient({ redis: modeConfig(tlsSentinel(), { id: 'client' }).redis, sealKey, backoffMs: 100 })
    try {
      const handles = []
      counter.hold()
      for (let i = 0; i < 4; i++) handles.push(await c.enqueue({ pool }, smallTask(tmp(), 20)))
      for (const id of ids) handles.push(await c.enqueue({ proxy: id }, smallTask(tmp(), 20)))
      await waitFor('jobs running on both proxies', () => proxies.every((p) => p.activeJobs > 0))
      const old = await sentinel.killMaster()
      expect(await sentinel.waitFailover(old)).not.toBe(old)
      counter.release()
      // one job to every queue after the failover, on the same client object
      handles.push(await c.enqueue({ pool }, smallTask(tmp())))
      for (const id of ids) handles.push(await c.enqueue({ proxy: id }, smallTask(tmp())))
      await expectEachSucceededOnce(handles, counter)
      expect(proxies.every((p) => p.state === 'running')).toBe(true)
      expect(await masterClients()).toContain(`user=${acl.user}`)
      counter.report('sentinel failover over TLS')
    } finally {
      await Promise.all(proxies.map((p) => p.shutdown()))
      await c.close()
    }
    // an election that fails is tried again after twice the failover-timeout (test/services/redis-sentinel.ts)
  }, 180_000)

  it('a reconnecting connection: an error is passed over while the sentinels name a live master, final when they name none', async () => {
    /** A connection being reconnected by ioredis, as readyRedis sees it: a status and events. */
    const reconnecting = () => Object.assign(new EventEmitter(), { status: 'reconnecting' }) as unknown as RedisClient & EventEmitter & { status: string }
    const live = reconnecting()
    const ready = readyRedis(live, modeConfig(tlsSentinel(), { id: 'client' }).redis)
    live.emit('error', new Error('All sentinels are unreachable. Retrying from scratch after 200ms.'))
    // readyRedis asks the sentinels and the master (TLS, ACL) before deciding; once it listens again, ready
    await waitFor('readyRedis waiting for the next event again', () => live.listenerCount('ready') > 0 && live.listenerCount('error') > 1)
    live.status = 'ready'
    live.emit('ready')
    expect(await ready).toBe(live)
    const dead = reconnecting()
    const failing = readyRedis(dead, modeConfig({ ...tlsSentinel(), sentinelName: 'nosuchmaster' }, { id: 'client' }).redis)
    dead.emit('error', new Error('All sentinels are unreachable. Retrying from scratch after 200ms.'))
    await codedError(() => failing, 'E_REDIS', SECRETS)
  })
})

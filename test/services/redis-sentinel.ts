/**
 * A private Sentinel-managed Redis for tests: a master, one replica and three sentinels (quorum 2) on free
 * loopback ports, master name `mymaster` unless told otherwise. Down-after is 1 s, so a killed master is
 * replaced within seconds. `killMaster()` first pauses writes on the master and waits until the replica has
 * every byte (what a crash would leave to chance with Redis's asynchronous replication), then SIGKILLs it;
 * `waitFailover()` waits until every sentinel names the new master and it answers as one.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { getFreePort, waitFor } from '../helpers/ports.js'
import { startDaemon, type Daemon } from '../helpers/process.js'

export interface RedisSentinelService {
  name: string
  /** host:port of each sentinel */
  sentinels: string[]
  sentinelPorts: number[]
  /** ports of the data nodes still running (master and replica) */
  dataPorts: () => number[]
  /** port of the data node the sentinels name now */
  masterPort: () => Promise<number>
  killMaster: () => Promise<number>
  waitFailover: (oldMasterPort: number) => Promise<number>
  destroy: () => Promise<void>
}

function plain(port: number): Redis {
  const c = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  c.on('error', () => undefined)
  return c
}

async function withClient<T>(port: number, fn: (c: Redis) => Promise<T>): Promise<T> {
  const c = plain(port)
  try {
    await c.connect()
    return await fn(c)
  } finally {
    c.disconnect()
  }
}

export async function startRedisSentinel(options: { name?: string; maxmemoryPolicy?: string } = {}): Promise<RedisSentinelService> {
  const name = options.name ?? 'mymaster'
  const dir = await mkdtemp(join(tmpdir(), 'bp-redis-sentinel-'))
  const daemons = new Map<number, Daemon>()
  const dataPorts = [await getFreePort(), await getFreePort()]
  const sentinelPorts = [await getFreePort(), await getFreePort(), await getFreePort()]
  const startData = async (port: number, replicaOf?: number) => {
    const d = startDaemon('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--dbfilename', `dump-${port}.rdb`, '--save', '',
      '--appendonly', 'no', '--maxmemory-policy', options.maxmemoryPolicy ?? 'noeviction',
      ...(replicaOf === undefined ? [] : ['--replicaof', '127.0.0.1', String(replicaOf)]),
    ])
    daemons.set(port, d)
    await waitFor(`redis on ${port}: ${d.output()}`, () => withClient(port, async (c) => (await c.ping()) === 'PONG'))
  }
  try {
    await startData(dataPorts[0]!)
    await startData(dataPorts[1]!, dataPorts[0])
    await waitFor('the replica in sync', () => withClient(dataPorts[1]!, async (c) => (await c.info('replication')).includes('master_link_status:up')))
    for (const port of sentinelPorts) {
      const conf = join(dir, `sentinel-${port}.conf`)
      await writeFile(conf, [
        `port ${port}`, 'bind 127.0.0.1', `dir ${dir}`,
        `sentinel monitor ${name} 127.0.0.1 ${dataPorts[0]} 2`,
        `sentinel down-after-milliseconds ${name} 1000`,
        `sentinel failover-timeout ${name} 10000`,
        `sentinel parallel-syncs ${name} 1`, '',
      ].join('\n'))
      const d = startDaemon('redis-server', [conf, '--sentinel'])
      daemons.set(port, d)
    }
    for (const port of sentinelPorts) {
      await waitFor(`sentinel on ${port} sees the replica and the other sentinels`, () =>
        withClient(port, async (c) => {
          const m = (await c.call('SENTINEL', 'master', name)) as string[]
          const field = (k: string) => m[m.indexOf(k) + 1]
          return Number(field('num-slaves')) >= 1 && Number(field('num-other-sentinels')) >= 2
        }),
      30_000)
    }
  } catch (error) {
    await Promise.all([...daemons.values()].map((d) => d.stop('SIGKILL')))
    await rm(dir, { recursive: true, force: true })
    throw error
  }
  const masterPort = async () => {
    for (const port of sentinelPorts) {
      try {
        const addr = await withClient(port, async (c) => (await c.call('SENTINEL', 'get-master-addr-by-name', name)) as [string, string] | null)
        if (addr !== null) return Number(addr[1])
      } catch {
        // next sentinel
      }
    }
    throw new Error('no sentinel names a master')
  }
  return {
    name,
    sentinels: sentinelPorts.map((p) => `127.0.0.1:${p}`),
    sentinelPorts,
    dataPorts: () => dataPorts.filter((p) => daemons.has(p)),
    masterPort,
    killMaster: async () => {
      const port = await masterPort()
      const replica = dataPorts.find((p) => p !== port)!
      await withClient(port, async (c) => {
        await c.call('CLIENT', 'PAUSE', '60000', 'WRITE')
        const offset = Number(/master_repl_offset:(\d+)/.exec(await c.info('replication'))?.[1])
        await waitFor('the replica to have every write', () =>
          withClient(replica, async (r) => Number(/slave_repl_offset:(\d+)/.exec(await r.info('replication'))?.[1]) >= offset),
        )
      })
      await daemons.get(port)?.stop('SIGKILL')
      daemons.delete(port)
      return port
    },
    waitFailover: async (oldMasterPort) => {
      let port = oldMasterPort
      await waitFor('the sentinels to promote the replica', async () => {
        port = await masterPort()
        if (port === oldMasterPort) return false
        return withClient(port, async (c) => (await c.info('replication')).includes('role:master'))
      }, 60_000)
      return port
    },
    destroy: async () => {
      await Promise.all([...daemons.values()].map((d) => d.stop('SIGKILL')))
      await rm(dir, { recursive: true, force: true })
    },
  }
}

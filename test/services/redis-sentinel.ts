/**
 * A private Sentinel-managed Redis for tests: a master, one replica and three sentinels (quorum 2) on free
 * loopback ports, master name `mymaster` unless told otherwise. Down-after is 1 s, so a killed master is
 * replaced within seconds; failover-timeout 5 s, so an election that fails (split votes) is tried again 10 s
 * later. `killMaster()` first pauses writes on the master and waits until the replica has
 * every byte (what a crash would leave to chance with Redis's asynchronous replication), then SIGKILLs it;
 * `waitFailover()` waits until every sentinel names the new master and it answers as one.
 *
 * With `security` (redis-secure.ts) the data nodes serve TLS only (`port 0`, `tls-port`, replication over
 * TLS) and/or know only one ACL user (the replica and the sentinels log in to them as that user); the
 * sentinels then serve TLS on `sentinelPorts` (the sentinels talk to each other and to the data nodes over
 * TLS) and plain TCP on `plainSentinelPorts`, and know the same ACL user only.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { getFreePort, waitFor } from '../helpers/ports.js'
import { startDaemon, type Daemon } from '../helpers/process.js'
import { adminOptions, listenArgs, securityArgs, securityLines, type RedisSecurity } from './redis-secure.js'

export interface RedisSentinelService {
  name: string
  /** host:port of each sentinel */
  sentinels: string[]
  sentinelPorts: number[]
  /** with TLS: the sentinels' plain TCP ports (the same sentinels) */
  plainSentinelPorts: number[]
  security: RedisSecurity
  /** ports of the data nodes still running (master and replica) */
  dataPorts: () => number[]
  /** port of the data node the sentinels name now */
  masterPort: () => Promise<number>
  killMaster: () => Promise<number>
  waitFailover: (oldMasterPort: number) => Promise<number>
  destroy: () => Promise<void>
}

function plain(port: number, security: RedisSecurity): Redis {
  const c = new Redis({ ...adminOptions(security), port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  c.on('error', () => undefined)
  return c
}

async function withClient<T>(port: number, security: RedisSecurity, fn: (c: Redis) => Promise<T>): Promise<T> {
  const c = plain(port, security)
  try {
    await c.connect()
    return await fn(c)
  } finally {
    c.disconnect()
  }
}

interface RedisSentinelOptions {
  name?: string
  maxmemoryPolicy?: string
  security?: RedisSecurity
}

function sentinelConf(name: string, dir: string, port: number, plainPort: number | undefined, masterPort: number, security: RedisSecurity): string {
  const acl = security.acl
  return [
    ...(security.certs === undefined ? [`port ${port}`] : [`port ${plainPort ?? 0}`, `tls-port ${port}`]),
    'bind 127.0.0.1', `dir ${dir}`,
    ...securityLines(security).map((l) => l.join(' ')),
    `sentinel monitor ${name} 127.0.0.1 ${masterPort} 2`,
    `sentinel down-after-milliseconds ${name} 1000`,
    `sentinel failover-timeout ${name} 5000`,
    `sentinel parallel-syncs ${name} 1`,
    ...(acl === undefined ? [] : [`sentinel auth-user ${name} ${acl.user}`, `sentinel auth-pass ${name} ${acl.password}`, `sentinel sentinel-user ${acl.user}`, `sentinel sentinel-pass ${acl.password}`]),
    '',
  ].join('\n')
}

/** True once the daemon has exited. */
const gone = (d: Daemon) => d.child.exitCode !== null || d.child.signalCode !== null

/**
 * Starts a server on free ports and waits until `ready` says it is ours and answers. A port can be taken
 * between getFreePort() and the server's bind (by another test's server, or as the local port of one of
 * the suite's many outgoing connections): the server then exits (EADDRINUSE) and is started again on new
 * ports, up to 3 times. Seen once: a sentinel not up after 30 s in a full run beside two CPU burners.
 */
async function launch(label: string, start: () => Promise<{ port: number; daemon: Daemon }>, ready: (port: number, d: Daemon) => Promise<boolean>): Promise<{ port: number; daemon: Daemon }> {
  for (let attempt = 1; ; attempt++) {
    const s = await start()
    try {
      await waitFor(`${label} on ${s.port}`, async () => gone(s.daemon) || (await ready(s.port, s.daemon)), 60_000)
    } catch (error) {
      await s.daemon.stop('SIGKILL')
      throw new Error(`${(error as Error).message}; its output: ${s.daemon.output()}`, { cause: error })
    }
    if (!gone(s.daemon)) return s
    if (attempt === 3 || !/address already in use/i.test(s.daemon.output())) throw new Error(`${label} on ${s.port} exited: ${s.daemon.output()}`)
  }
}

export async function startRedisSentinel(options: RedisSentinelOptions = {}): Promise<RedisSentinelService> {
  const name = options.name ?? 'mymaster'
  const security = options.security ?? {}
  const dir = await mkdtemp(join(tmpdir(), 'bp-redis-sentinel-'))
  const daemons = new Map<number, Daemon>()
  const dataPorts: number[] = []
  const sentinelPorts: number[] = []
  const plainSentinelPorts: number[] = []
  const admin = <T>(port: number, fn: (c: Redis) => Promise<T>) => withClient(port, security, fn)
  /** our daemon answers on `port` (not another test's server that took the port before it could) */
  const answers = (port: number, d: Daemon) => admin(port, async (c) => Number(/process_id:(\d+)/.exec(await c.info('server'))?.[1]) === d.child.pid)
  const startData = async (replicaOf?: number) => {
    const { port, daemon } = await launch('redis', async () => {
      const port = await getFreePort()
      const d = startDaemon('redis-server', [
        ...listenArgs(security, port), '--bind', '127.0.0.1', '--dir', dir, '--dbfilename', `dump-${port}.rdb`, '--save', '',
        '--appendonly', 'no', '--maxmemory-policy', options.maxmemoryPolicy ?? 'noeviction',
        ...(replicaOf === undefined ? [] : ['--replicaof', '127.0.0.1', String(replicaOf)]),
        ...securityArgs(security),
        ...(security.acl === undefined ? [] : ['--masteruser', security.acl.user, '--masterauth', security.acl.password]),
      ])
      return { port, daemon: d }
    }, answers)
    daemons.set(port, daemon)
    dataPorts.push(port)
  }
  try {
    await startData()
    await startData(dataPorts[0])
    await waitFor('the replica in sync', () => admin(dataPorts[1]!, async (c) => (await c.info('replication')).includes('master_link_status:up')))
    for (let i = 0; i < 3; i++) {
      let plainPort: number | undefined
      const { port, daemon } = await launch('sentinel', async () => {
        const port = await getFreePort()
        plainPort = security.certs === undefined ? undefined : await getFreePort()
        const conf = join(dir, `sentinel-${port}.conf`)
        await writeFile(conf, sentinelConf(name, dir, port, plainPort, dataPorts[0]!, security))
        return { port, daemon: startDaemon('redis-server', [conf, '--sentinel']) }
      }, answers)
      daemons.set(port, daemon)
      sentinelPorts.push(port)
      if (plainPort !== undefined) plainSentinelPorts.push(plainPort)
    }
    for (const port of sentinelPorts) {
      await waitFor(`sentinel on ${port} sees the replica and the other sentinels`, () =>
        admin(port, async (c) => {
          const m = (await c.call('SENTINEL', 'master', name)) as string[]
          const field = (k: string) => m[m.indexOf(k) + 1]
          if (Number(field('num-slaves')) >= 1 && Number(field('num-other-sentinels')) >= 2) return true
          throw new Error(`it sees ${field('num-slaves')} replica(s) and ${field('num-other-sentinels')} other sentinel(s)`)
        }),
      60_000)
    }
  } catch (error) {
    await Promise.all([...daemons.values()].map((d) => d.stop('SIGKILL')))
    await rm(dir, { recursive: true, force: true })
    throw error
  }
  const masterPort = async () => {
    for (const port of sentinelPorts) {
      try {
        const addr = await admin(port, async (c) => (await c.call('SENTINEL', 'get-master-addr-by-name', name)) as [string, string] | null)
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
    plainSentinelPorts,
    security,
    dataPorts: () => dataPorts.filter((p) => daemons.has(p)),
    masterPort,
    killMaster: async () => {
      const port = await masterPort()
      const replica = dataPorts.find((p) => p !== port)!
      await admin(port, async (c) => {
        await c.call('CLIENT', 'PAUSE', '60000', 'WRITE')
        const offset = Number(/master_repl_offset:(\d+)/.exec(await c.info('replication'))?.[1])
        await waitFor('the replica to have every write', () =>
          admin(replica, async (r) => Number(/slave_repl_offset:(\d+)/.exec(await r.info('replication'))?.[1]) >= offset),
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
        return admin(port, async (c) => (await c.info('replication')).includes('role:master'))
      }, 60_000)
      return port
    },
    destroy: async () => {
      await Promise.all([...daemons.values()].map((d) => d.stop('SIGKILL')))
      await rm(dir, { recursive: true, force: true })
      },
  }
}

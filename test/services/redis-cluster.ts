/**
 * A private Redis Cluster for tests: three masters (no replicas) on free loopback ports, each with AOF
 * and its own nodes.conf in a temp dir, joined with `redis-cli --cluster create`; every node's cluster bus
 * port (port + 10000) is free too. `restart(i)` stops node i and starts it again on the same port and dir:
 * it comes back with its slots and data.
 *
 * With `security` (redis-secure.ts) the nodes serve TLS only (`tls-port`, `port 0`, `tls-cluster yes`:
 * the cluster bus too) and/or know only one ACL user. With `announceHostnames` each node announces
 * `node<i>.bp-test.invalid` to clients (`cluster-announce-hostname`, `cluster-preferred-endpoint-type
 * hostname`), a name that never resolves: a client reaches the nodes only through `natMap`
 * (`announced[i]` -> `nodes[i]`), as behind NAT or in containers. The bus still uses the IPs.
 */
import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { getFreePort, waitFor } from '../helpers/ports.js'
import { startDaemon, type Daemon } from '../helpers/process.js'
import { adminOptions, cliArgs, listenArgs, securityArgs, type RedisSecurity } from './redis-secure.js'

const run = promisify(execFile)

export interface RedisClusterService {
  /** host:port of each master */
  nodes: string[]
  /** host:port each master announces to clients (a hostname with announceHostnames) */
  announced: string[]
  ports: number[]
  /** how the nodes are secured (TLS, ACL user) */
  security: RedisSecurity
  dir: string
  /** stops node i (SIGTERM: AOF flushed) */
  stop: (i: number) => Promise<void>
  /** starts node i again and waits until the cluster is ok */
  start: (i: number) => Promise<void>
  /** waits until every running node says cluster_state:ok */
  waitHealthy: () => Promise<void>
  destroy: () => Promise<void>
}

/** A free port whose cluster bus port (+10000) is free as well. */
async function clusterPort(taken: Set<number>): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const p = await getFreePort()
    if (p > 55_000 || taken.has(p)) continue
    const bus = await new Promise<boolean>((resolve) => {
      const srv = createServer()
      srv.once('error', () => resolve(false))
      srv.listen(p + 10_000, '127.0.0.1', () => srv.close(() => resolve(true)))
    })
    if (bus) return p
  }
  throw new Error('no free port pair for a cluster node')
}

async function info(port: number, section: string, security: RedisSecurity): Promise<string> {
  const c = new Redis({ ...adminOptions(security), port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  c.on('error', () => undefined)
  try {
    await c.connect()
    return await c.info(section)
  } finally {
    c.disconnect()
  }
}

interface RedisClusterOptions {
  masters?: number
  maxmemoryPolicy?: string
  security?: RedisSecurity
  announceHostnames?: boolean
}

const announcedHost = (i: number) => `node${i}.bp-test.invalid`

export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisClusterService> {
  const count = options.masters ?? 3
  const security = options.security ?? {}
  const dir = await mkdtemp(join(tmpdir(), 'bp-redis-cluster-'))
  const taken = new Set<number>()
  const ports: number[] = []
  for (let i = 0; i < count; i++) {
    const p = await clusterPort(taken)
    taken.add(p)
    ports.push(p)
  }
  const daemons: (Daemon | undefined)[] = []
  const start = async (i: number) => {
    const port = ports[i]!
    const nodeDir = join(dir, String(port))
    await mkdir(nodeDir, { recursive: true })
    const d = startDaemon('redis-server', [
      ...listenArgs(security, port), '--bind', '127.0.0.1', '--dir', nodeDir, '--save', '',
      '--appendonly', 'yes', '--appendfsync', 'always',
      '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000',
      '--maxmemory-policy', options.maxmemoryPolicy ?? 'noeviction',
      ...(security.certs === undefined ? [] : ['--tls-cluster', 'yes']),
      ...(options.announceHostnames === true ? ['--cluster-announce-hostname', announcedHost(i), '--cluster-preferred-endpoint-type', 'hostname'] : []),
      ...securityArgs(security),
    ])
    daemons[i] = d
    await waitFor(`cluster node on ${port}: ${d.output()}`, async () => (await info(port, 'server', security)).includes('redis_version'))
  }
  const waitHealthy = async () => {
    await waitFor('cluster_state:ok on every node', async () => {
      for (let i = 0; i < count; i++) {
        if (daemons[i] === undefined) continue
        if (!(await info(ports[i]!, 'cluster', security)).includes('cluster_enabled:1')) return false
        const c = new Redis({ ...adminOptions(security), port: ports[i]!, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
        c.on('error', () => undefined)
        try {
          await c.connect()
          const state = (await c.call('CLUSTER', 'INFO')) as string
          if (!state.includes('cluster_state:ok')) return false
        } finally {
          c.disconnect()
        }
      }
      return true
    }, 60_000)
  }
  try {
    for (let i = 0; i < count; i++) await start(i)
    const cli = cliArgs(security)
    await run('redis-cli', [...cli.args, '--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { env: cli.env })
    await waitHealthy()
  } catch (error) {
    await Promise.all(daemons.map((d) => (d === undefined ? Promise.resolve() : d.stop('SIGKILL'))))
    await rm(dir, { recursive: true, force: true })
    throw error
  }
  const stop = async (i: number) => {
    await daemons[i]?.stop('SIGTERM')
    daemons[i] = undefined
  }
  return {
    nodes: ports.map((p) => `127.0.0.1:${p}`),
    announced: ports.map((p, i) => (options.announceHostnames === true ? `${announcedHost(i)}:${p}` : `127.0.0.1:${p}`)),
    ports,
    security,
    dir,
    stop,
    start: async (i) => {
      await start(i)
      await waitHealthy()
    },
    waitHealthy,
    destroy: async () => {
      await Promise.all(ports.map((_, i) => stop(i)))
      await rm(dir, { recursive: true, force: true })
    },
  }
}

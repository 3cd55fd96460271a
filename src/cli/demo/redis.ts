/**
 * Redis for the demo: the one at the given URL when it answers; otherwise, when `redis-server` is
 * installed, a private one (free loopback port, temp dir, no persistence, `noeviction` as the proxy
 * requires) that is stopped and removed afterwards; otherwise an error that says how to get one.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Cluster, Redis } from 'ioredis'
import { BackupProxyError } from '../../common/errors.js'
import { createRedis, type RedisConfig } from '../../queue/redis.js'

export interface DemoRedis {
  url: string
  /** true when we started it */
  private: boolean
  stop(): Promise<void>
}

async function answers(url: string, timeoutMs = 1500): Promise<boolean> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: timeoutMs, enableOfflineQueue: false })
  client.on('error', () => undefined)
  try {
    await client.connect()
    return (await client.ping()) === 'PONG'
  } catch {
    return false
  } finally {
    client.disconnect()
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      srv.close(() => (typeof addr === 'object' && addr !== null ? resolve(addr.port) : reject(new Error('no free port'))))
    })
  })
}

function which(cmd: string): Promise<boolean> {
  return new Promise((resolve) => {
    const p = spawn('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' })
    p.on('exit', (code) => resolve(code === 0))
    p.on('error', () => resolve(false))
  })
}

export async function demoRedis(url: string, say: (line: string) => void): Promise<DemoRedis> {
  if (await answers(url)) return { url, private: false, stop: () => Promise.resolve() }
  if (!(await which('redis-server'))) {
    throw new BackupProxyError('E_REDIS', `no Redis answers at ${url} and redis-server is not installed. Start one (\`apt-get install redis-server\`, or \`docker run -d -p 6379:6379 redis:7\`) or point REDIS_URL / --redis-url at yours, then run the demo again.`)
  }
  say(`no Redis at ${url}: starting a private redis-server for the demo`)
  const dir = await mkdtemp(join(tmpdir(), 'backup-proxy-demo-redis-'))
  const port = await freePort()
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction'], { stdio: 'ignore' })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const privateUrl = `redis://127.0.0.1:${port}`
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      await exited
    }
    await rm(dir, { recursive: true, force: true })
  }
  for (let i = 0; i < 50; i++) {
    if (await answers(privateUrl, 500)) return { url: privateUrl, private: true, stop }
    if (child.exitCode !== null) break
    await new Promise((r) => setTimeout(r, 100))
  }
  await stop()
  throw new BackupProxyError('E_REDIS', `the private redis-server on port ${port} did not start; start Redis yourself and set REDIS_URL`)
}

/**
 * Removes every key under `prefix` (the demo's queues, jobs, heartbeats and registry), on every master
 * of a cluster: the demo leaves the user's Redis as it found it. SCAN, never KEYS or FLUSHDB.
 */
export async function removePrefix(config: RedisConfig, prefix: string): Promise<number> {
  const client = createRedis(config, 'backup-proxy:demo:cleanup')
  try {
    const nodes = client instanceof Cluster ? client.nodes('master') : [client]
    let removed = 0
    for (const node of nodes) {
      let cursor = '0'
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500)
        cursor = next
        // one DEL per key: in a cluster the keys of one batch may live in different slots
        for (const key of keys) removed += await node.del(key)
      } while (cursor !== '0')
    }
    return removed
  } finally {
    client.disconnect()
  }
}

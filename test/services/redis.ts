/**
 * A private redis-server for tests: free port, temp dir, optional AOF (for restart tests). The shared
 * one at 127.0.0.1:6379 is not used, so a test run never touches a developer's data.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { getFreePort, waitFor } from '../helpers/ports.js'
import { startDaemon, type Daemon } from '../helpers/process.js'

export interface RedisService {
  url: string
  port: number
  dir: string
  /** stop the server (data stays in dir when AOF is on) */
  stop: () => Promise<void>
  /** start it again on the same port and dir */
  restart: () => Promise<void>
  /** stop and delete dir */
  destroy: () => Promise<void>
}

interface RedisOptions {
  aof?: boolean
  maxmemoryPolicy?: string
}

export async function startRedis(options: RedisOptions = {}): Promise<RedisService> {
  const dir = await mkdtemp(join(tmpdir(), 'bp-redis-'))
  const port = await getFreePort()
  const url = `redis://127.0.0.1:${port}`
  let daemon: Daemon | undefined
  const start = async () => {
    daemon = startDaemon('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
      '--appendonly', options.aof === true ? 'yes' : 'no', '--appendfsync', 'always',
      '--maxmemory-policy', options.maxmemoryPolicy ?? 'noeviction',
    ])
    await waitFor(`redis-server on ${port}: ${daemon.output()}`, async () => {
      const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
      // the same failure rejects connect() below, which waitFor reports; the event would only print it twice
      client.on('error', () => undefined)
      try {
        await client.connect()
        return (await client.ping()) === 'PONG'
      } finally {
        client.disconnect()
      }
    })
  }
  await start()
  const stop = async () => daemon?.stop('SIGTERM')
  return {
    url,
    port,
    dir,
    stop,
    restart: start,
    destroy: async () => {
      await stop()
      await rm(dir, { recursive: true, force: true })
    },
  }
}

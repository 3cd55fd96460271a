/**
 * `serve` through a Redis outage (a private redis-server stopped, then started again): every line it
 * writes stays a JSON log record (no raw multi-line stack from BullMQ or ioredis), it recovers without a
 * restart (heartbeat back, a job enqueued after the outage runs), and SIGTERM still ends it with exit 0.
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listProxies } from '../../src/queue/registry.js'
import { waitFor } from '../helpers/ports.js'
import { startDaemon, type Daemon } from '../helpers/process.js'
import { startRedis, type RedisService } from '../services/redis.js'
import { backupTask, client, sealKeyText, testConfig, uid } from './fixtures.js'

const root = new URL('../../', import.meta.url).pathname
let server: RedisService
const daemons: Daemon[] = []
beforeAll(async () => {
  server = await startRedis()
})
afterAll(async () => {
  await Promise.all(daemons.map((d) => d.stop('SIGKILL')))
  await server.destroy()
})

function startServe(proxyId: string): Daemon {
  const d = startDaemon(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--proxy', proxyId, '--redis-url', server.url, '--listen', '127.0.0.1:0', '--threads', '1'], {
    cwd: root,
    env: { ...process.env, BACKUP_PROXY_STAND_INS: '1', BACKUP_PROXY_SECURITY_SEAL_KEY: sealKeyText, BACKUP_PROXY_LOG_LEVEL: 'info', BACKUP_PROXY_LOG_PRETTY: 'false' },
  })
  daemons.push(d)
  return d
}

async function heartbeat(proxyId: string): Promise<boolean> {
  const r = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  r.on('error', () => undefined)
  try {
    await r.connect()
    return (await listProxies(r, 'bull')).some((p) => p.proxyId === proxyId)
  } catch {
    return false
  } finally {
    r.disconnect()
  }
}

describe('serve through a Redis outage', { timeout: 240_000 }, () => {
  it('logs stay structured, the proxy recovers without a restart, SIGTERM exits 0', async () => {
    const id = uid('po')
    const d = startServe(id)
    await waitFor('serving', () => d.output().includes('proxy serving'), 60_000)
    await server.stop()
    await waitFor('the outage is seen', () => d.output().includes('queue worker error'), 60_000)
    await server.restart()
    await waitFor('heartbeat back', () => heartbeat(id), 60_000)
    const config = testConfig(server.url)
    const c = client(config)
    try {
      const handle = await c.enqueue({ proxy: id }, backupTask())
      expect((await handle.result()).status).toBe('success')
    } finally {
      await c.close()
    }
    const code = new Promise<number | null>((resolve) => d.child.once('exit', (c) => resolve(c)))
    d.child.kill('SIGTERM')
    expect(await code).toBe(0)
    const raw = d
      .output()
      .split('\n')
      .filter((line) => line.trim() !== '')
      .filter((line) => {
        try {
          return typeof JSON.parse(line) !== 'object'
        } catch {
          return true
        }
      })
    expect(raw).toEqual([])
  })
})

/**
 * `backup-proxy serve` as real processes: SIGKILL mid-job and another proxy of the pool finishes the job;
 * SIGTERM drains (exit 0, nothing locked). Runs the CLI from sources under tsx with stand-in processors.
 */
import { existsSync } from 'node:fs'
import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, inject, it } from 'vitest'
import { queueKeys } from '../../src/queue/names.js'
import { listProxies } from '../../src/queue/registry.js'
import { waitFor } from '../helpers/ports.js'
import { startDaemon, type Daemon } from '../helpers/process.js'
import { useTempDir } from '../helpers/tmp.js'
import { backupTask, client, sealKeyText, testConfig, uid, VM1 } from './fixtures.js'

const redisUrl = inject('redisUrl')
const tmp = useTempDir('bp-serve-')
const redis = new Redis(redisUrl)
const daemons: Daemon[] = []
afterAll(async () => {
  await Promise.all(daemons.map((d) => d.stop('SIGKILL')))
  await redis.quit()
})

const root = new URL('../../', import.meta.url).pathname

/** `globalArgs` go before `serve` (--config); without them the proxy runs with --threads 1. */
function startServe(proxyId: string, pool: string, env: Record<string, string> = {}, globalArgs?: string[]): Daemon {
  const serveArgs = ['serve', '--proxy', proxyId, '--pool', pool, '--redis-url', redisUrl, '--listen', '127.0.0.1:0', ...(globalArgs === undefined ? ['--threads', '1'] : [])]
  const d = startDaemon(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...(globalArgs ?? []), ...serveArgs], {
    cwd: root,
    env: {
      ...process.env,
      BACKUP_PROXY_STAND_INS: '1',
      BACKUP_PROXY_SECURITY_SEAL_KEY: sealKeyText,
      BACKUP_PROXY_WORKERS_LOCK_DURATION_MS: '2000',
      BACKUP_PROXY_WORKERS_STALLED_INTERVAL_MS: '1000',
      BACKUP_PROXY_LOG_LEVEL: 'info',
      BACKUP_PROXY_LOG_PRETTY: 'false',
      ...env,
    },
  })
  daemons.push(d)
  return d
}

async function waitServing(proxyId: string, d: Daemon): Promise<string> {
  let instance = ''
  await waitFor(`proxy ${proxyId} heartbeat`, async () => {
    if (d.child.exitCode !== null) throw new Error(`serve exited with ${d.child.exitCode}:\n${d.output()}`)
    const p = (await listProxies(redis, 'bull')).find((x) => x.proxyId === proxyId)
    instance = p?.instance ?? ''
    return p !== undefined
  }, 60_000)
  return instance
}

const exited = (d: Daemon) => new Promise<number | null>((resolve) => (d.child.exitCode !== null ? resolve(d.child.exitCode) : d.child.once('exit', (code) => resolve(code))))

// real processes started from sources under tsx on a shared 2-core machine: generous timeouts
describe('serve processes', { timeout: 240_000 }, () => {
  it('a proxy killed with SIGKILL mid-job: its lock expires and another proxy of the pool cleans up and finishes the job', async () => {
    const pool = uid('pool')
    const config = testConfig(redisUrl)
    const c = client(config)
    try {
      const aId = uid('pa')
      const a = startServe(aId, pool)
      const aInstance = await waitServing(aId, a)
      const task = backupTask({ settings: { standInDir: tmp(), standInDiskBytes: 32 << 20, standInChunkDelayMs: 25 } })
      const handle = await c.enqueue({ pool }, task)
      const dir = join(tmp(), task.job.id)
      await waitFor('A streaming (temporary present)', async () => existsSync(dir) && (await readdir(dir)).some((f) => f.startsWith('.')), 30_000)
      await a.stop('SIGKILL')
      expect(await redis.exists(queueKeys.lock('bull', handle.queue, handle.id))).toBe(1)
      const bId = uid('pb')
      const b = startServe(bId, pool)
      await waitServing(bId, b)
      const summary = await handle.result()
      expect(summary.status).toBe('success')
      expect(summary.ranBy).toMatch(new RegExp(`^${bId}@`))
      expect(summary.ranBy).not.toBe(aInstance)
      expect(summary.infos).toContainEqual({ message: 'cleaned up the previous attempt', data: { temporaries: 1 } })
      expect((await readdir(dir)).sort()).toEqual([`${VM1}.bin`])
      await b.stop('SIGTERM')
    } finally {
      await c.close()
    }
  })

  it('SIGTERM drains: a job finishing within the grace period completes, the process exits 0 and leaves nothing locked', async () => {
    const pool = uid('pool')
    const config = testConfig(redisUrl)
    const c = client(config)
    try {
      const id = uid('pd')
      const d = startServe(id, pool, { BACKUP_PROXY_WORKERS_SHUTDOWN_GRACE_MS: '30s' })
      await waitServing(id, d)
      const handle = await c.enqueue({ proxy: id }, backupTask({ settings: { standInDir: tmp(), standInDiskBytes: 4 << 20, standInChunkDelayMs: 60 } }))
      await waitFor('job active', async () => (await handle.state()) === 'active', 30_000)
      const code = exited(d)
      d.child.kill('SIGTERM')
      expect(await code).toBe(0)
      expect(await handle.state()).toBe('completed')
      expect((await handle.result()).status).toBe('success')
      expect(await redis.exists(queueKeys.lock('bull', handle.queue, handle.id))).toBe(0)
      expect((await listProxies(redis, 'bull')).some((p) => p.proxyId === id)).toBe(false)
    } finally {
      await c.close()
    }
  })

  it('SIGTERM past the grace period: the stream is cancelled cleanly, the job goes back to wait, exit 0', async () => {
    const pool = uid('pool')
    const config = testConfig(redisUrl)
    const c = client(config)
    try {
      const id = uid('pg')
      const d = startServe(id, pool, { BACKUP_PROXY_WORKERS_SHUTDOWN_GRACE_MS: '500ms' })
      await waitServing(id, d)
      const task = backupTask({ settings: { standInDir: tmp(), standInDiskBytes: 256 << 20, standInChunkDelayMs: 25 } })
      const handle = await c.enqueue({ proxy: id }, task)
      const dir = join(tmp(), task.job.id)
      await waitFor('streaming', async () => existsSync(dir) && (await readdir(dir)).length > 0, 30_000)
      const code = exited(d)
      d.child.kill('SIGTERM')
      expect(await code).toBe(0)
      expect(await handle.state()).toBe('waiting')
      expect(await redis.exists(queueKeys.lock('bull', handle.queue, handle.id))).toBe(0)
      expect(await readdir(dir)).toEqual([])
      await c.cancel(handle.queue, handle.id)
    } finally {
      await c.close()
    }
  })

  it('a second signal forces: a job that ignores its cancellation cannot keep the process alive (exit 1, E_SHUTDOWN_STUCK)', async () => {
    const pool = uid('pool')
    const config = testConfig(redisUrl)
    const c = client(config)
    try {
      const id = uid('pf')
      const d = startServe(id, pool, { BACKUP_PROXY_WORKERS_SHUTDOWN_GRACE_MS: '1h' })
      await waitServing(id, d)
      const handle = await c.enqueue({ proxy: id }, backupTask({ settings: { standInFail: 'ignore-abort' } }))
      await waitFor('job active', async () => (await handle.state()) === 'active', 30_000)
      const code = exited(d)
      d.child.kill('SIGTERM')
      await waitFor('graceful stop logged', () => d.output().includes('stopping gracefully'), 60_000)
      d.child.kill('SIGTERM')
      expect(await code).toBe(1)
      expect(d.output()).toContain('E_SHUTDOWN_STUCK')
      await c.cancel(handle.queue, handle.id).catch(() => undefined)
    } finally {
      await c.close()
    }
  })

  it('SIGHUP reloads the configuration and applies threads/concurrency live; /readyz and /metrics answer', async () => {
    const id = uid('ph')
    const file = join(tmp(), `${id}.yaml`)
    await writeFile(file, 'workers:\n  threads: 1\n  concurrency: 1\n')
    const d = startServe(id, uid('pool'), {}, ['--config', file])
    await waitServing(id, d)
    // the heartbeat comes before the HTTP server: wait for its log line
    let url: string | undefined
    await waitFor('HTTP endpoints log line', () => (url = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(d.output())?.[1]) !== undefined, 60_000)
    const ready = await fetch(`${url}/readyz`)
    expect(ready.status).toBe(200)
    const metrics = await (await fetch(`${url}/metrics`)).text()
    expect(metrics).toContain('backup_proxy_threads')
    await writeFile(file, 'workers:\n  threads: 3\n  concurrency: 4\n')
    d.child.kill('SIGHUP')
    await waitFor('rescaled heartbeat', async () => {
      const p = (await listProxies(redis, 'bull')).find((x) => x.proxyId === id)
      return p?.threads === 3 && p.concurrency === 4
    }, 20_000)
    const code = exited(d)
    d.child.kill('SIGINT')
    expect(await code).toBe(0)
  })
})

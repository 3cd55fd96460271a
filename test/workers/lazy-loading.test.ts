/**
 * Memory by not loading or starting what is not used (docs/backup.md, Memory): an idle `serve` runs no
 * stream thread (threads start with the first stream and are retired once idle), and a stream thread loads
 * the AWS SDK only when it talks to an S3 remote — seen in the thread's own module registry (the
 * `standin.modules` task lists the CommonJS packages the thread loaded; the SDK is CommonJS).
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, inject, it } from 'vitest'
import { silentLogger } from '../../src/common/log.js'
import { StreamPool } from '../../src/workers/pool.js'
import type { ProxyRuntime } from '../../src/workers/proxy.js'
import { serve } from '../../src/workers/serve.js'
import { getFreePort, waitFor } from '../helpers/ports.js'
import { testConfig, uid } from './fixtures.js'

const redisUrl = inject('redisUrl')
const dirs: string[] = []
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})

describe('lazy threads and modules', () => {
  it('an idle serve has started no stream thread; the first stream starts one', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('lazy') }, workers: { threads: 3 } })
    let ready!: (runtime: ProxyRuntime) => void
    const readyRuntime = new Promise<ProxyRuntime>((resolve) => (ready = resolve))
    const served = serve({ config, logger: silentLogger, handleSignals: false, onReady: (runtime) => ready(runtime) })
    const runtime = await readyRuntime
    try {
      expect(runtime.poolStats()).toMatchObject({ threads: 3, started: 0, busy: 0 })
      // the heartbeat still announces the configured thread count (what `status` shows)
      expect(runtime.heartbeat().threads).toBe(3)
      await runtime.pool.run('standin.noop', { value: 1 })
      expect(runtime.poolStats()).toMatchObject({ threads: 3, started: 1 })
    } finally {
      await runtime.shutdown()
    }
    await expect(served).resolves.toBe(0)
  })

  it('a thread idle for idleTimeoutMs is retired; the next stream starts a new one', async () => {
    const pool = new StreamPool({ threads: 2, idleTimeoutMs: 50 })
    try {
      const first = await pool.run('standin.noop', { value: 1 })
      expect(pool.stats.started).toBe(1)
      await waitFor('the idle thread retired', () => pool.stats.started === 0)
      const second = await pool.run('standin.noop', { value: 2 })
      expect(second.threadId).not.toBe(first.threadId)
      expect(pool.stats.started).toBe(1)
    } finally {
      await pool.close()
    }
  })

  it('a thread that copied between local remotes never loaded the AWS SDK; the same thread loads it for an S3 remote', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bp-lazy-'))
    dirs.push(dir)
    await mkdir(join(dir, 'src'))
    await mkdir(join(dir, 'dst'))
    await writeFile(join(dir, 'src', 'a.json'), '{"a":1}')
    // one thread, kept while the test runs: every task below runs in the same thread
    const pool = new StreamPool({ threads: 1, idleTimeoutMs: 600_000 })
    try {
      const source = { url: `file://${join(dir, 'src')}`, options: {} }
      await pool.run('mirror.copy', { op: 'file', source, sourcePath: 'a.json', targets: [{ id: 'local', url: `file://${join(dir, 'dst')}`, options: {}, path: 'a.json' }] })
      expect(await readFile(join(dir, 'dst', 'a.json'), 'utf8')).toBe('{"a":1}')
      const local = await pool.run('standin.modules', {})
      expect(local.packages).not.toContain('@aws-sdk/client-s3')
      expect(local.packages).not.toContain('@aws-sdk/lib-storage')
      // nor the metrics registry's prom-client: a thread's metrics travel as deltas (issue 19, memory)
      expect(local.packages).not.toContain('prom-client')

      // control: an S3 target (nothing listens there, the copy fails) makes the same thread load the SDK
      const port = await getFreePort()
      const s3 = { id: 's3', url: `s3+http://AK:SK@127.0.0.1:${port}/bucket/dir`, options: { s3MaxAttempts: 1 }, path: 'a.json' }
      await pool.run('mirror.copy', { op: 'file', source, sourcePath: 'a.json', targets: [s3] }).catch(() => undefined)
      const afterS3 = await pool.run('standin.modules', {})
      expect(afterS3.threadId).toBe(local.threadId)
      expect(afterS3.packages).toContain('@aws-sdk/client-s3')
    } finally {
      await pool.close()
    }
  })
})

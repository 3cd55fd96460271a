/**
 * End to end through the queue: `serve` (real ProxyRuntime, BullMQ worker, StreamPool threads, the
 * backup engine) on a private Redis, a backup.run job enqueued with the real client against the XAPI
 * simulator and two local remotes. Afterwards /metrics shows, per remote, bytes written equal to all
 * the bytes written on that remote (disk images from the threads, metadata from the main thread),
 * remote_up 1 and the remote operations of both threads, the job counted with its duration, and the
 * queue's counts.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { silentLogger } from '../../src/common/log.js'
import { compileConfig } from '../../src/config/index.js'
import type { Observability } from '../../src/metrics/index.js'
import { EnqueueClient } from '../../src/queue/client.js'
import { SealKey } from '../../src/queue/seal.js'
import type { ProxyRuntime } from '../../src/workers/proxy.js'
import { serve } from '../../src/workers/serve.js'
import { startXapiSimulator, type XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { startRedis, type RedisService } from '../services/redis.js'

const PROXY = 'metrics-e2e'

/**
 * Bytes of every file under a remote's root, and of its disk images. One run writes each VM's
 * cache.json.gz twice (after publishing and after retention, same content when nothing is deleted),
 * so the bytes it wrote are the bytes on the remote plus the cache's once more.
 */
async function remoteBytes(root: string): Promise<{ written: number; images: number }> {
  let all = 0
  let images = 0
  let cache = 0
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue
    const path = join(entry.parentPath, entry.name)
    const size = (await stat(path)).size
    all += size
    if (path.includes('/vdis/')) images += size
    if (entry.name === 'cache.json.gz') cache += size
  }
  return { written: all + cache, images }
}

function sampleOf(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  if (line === undefined) throw new Error(`no series ${series} in /metrics`)
  return Number(line.slice(series.length + 1))
}

describe('metrics of a backup through the queue (serve)', () => {
  let redis: RedisService
  let sim: XapiSimulator
  let dir: Awaited<ReturnType<typeof makeTempDir>>
  let client: EnqueueClient
  let served: Promise<number>
  let runtime: ProxyRuntime
  let observability: Observability

  beforeAll(async () => {
    redis = await startRedis()
    sim = await startXapiSimulator({ vms: 1, disksPerVm: 2, diskSizeBytes: 16 * 1024 * 1024, fillRatio: 0.5, seed: 11 })
    dir = await makeTempDir('bp-queue-metrics-')
    await Promise.all(['a', 'b'].map((r) => mkdir(join(dir.path, r))))
    const sealKeyText = randomBytes(32).toString('base64')
    const config = compileConfig({
      proxy: { id: PROXY },
      redis: { url: redis.url },
      security: { sealKey: sealKeyText },
      http: { listen: '127.0.0.1:0' },
      log: { level: 'silent' },
      workers: { threads: 2, concurrency: 1 },
    })
    const ready = new Promise<void>((resolve) => {
      served = serve({
        config,
        logger: silentLogger,
        handleSignals: false,
        onReady: (r, o) => {
          runtime = r
          observability = o
          resolve()
        },
      })
      served.catch(() => resolve()) // a failed start rejects `served`, checked in the test
    })
    await ready
    client = new EnqueueClient({ redis: config.redis, sealKey: SealKey.fromString(sealKeyText) })
  })

  afterAll(async () => {
    await client?.close()
    await runtime?.shutdown({ force: true })
    await served
    await sim?.close()
    await redis?.destroy()
    await dir?.remove()
  })

  it('counts the job and the bytes written per remote, equal to all the bytes written on each remote', async () => {
    expect(runtime).toBeDefined()
    const vm = sim.listVms()[0]!
    const handle = await client.enqueue(
      { proxy: PROXY },
      {
        kind: 'backup.run',
        job: { id: 'metrics-job', name: 'metrics e2e', mode: 'delta', vms: { uuid: [vm.uuid] }, settings: { '': {} } },
        schedule: { id: 'sched-1' },
        remotes: { a: { url: `file://${dir.path}/a` }, b: { url: `file://${dir.path}/b` } },
        xapis: { sim: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
      },
    )
    const summary = await handle.result()
    expect(summary.status, JSON.stringify(summary)).toBe('success')

    const text = await (await fetch(`${observability.http.url}/metrics`)).text()
    for (const remote of ['a', 'b']) {
      const onRemote = await remoteBytes(join(dir.path, remote))
      expect(onRemote.images).toBeGreaterThan(0)
      expect(onRemote.written).toBeGreaterThan(onRemote.images) // metadata counts too
      expect(sampleOf(text, `backup_proxy_bytes_written_total{remote="${remote}"}`)).toBe(onRemote.written)
      expect(sampleOf(text, `backup_proxy_remote_up{remote="${remote}"}`)).toBe(1)
      // opened once on the main thread (metadata, retention) and, in the stream threads, once per thread
      // that took one of the 2 disks (the thread's RemoteCache shares it between disks)
      const opens = sampleOf(text, `backup_proxy_remote_operations_total{remote="${remote}",op="open",status="ok"}`)
      expect(opens).toBeGreaterThanOrEqual(1 + 1)
      expect(opens).toBeLessThanOrEqual(1 + 2)
    }
    expect(sampleOf(text, 'backup_proxy_jobs_total{kind="backup.run",status="success"}')).toBe(1)
    expect(sampleOf(text, 'backup_proxy_job_duration_seconds_count{kind="backup.run"}')).toBe(1)
    expect(sampleOf(text, 'backup_proxy_disk_export_duration_seconds_count')).toBe(2)
    expect(sampleOf(text, `backup_proxy_queue_jobs{queue="{proxy.${PROXY}}",state="completed"}`)).toBe(1)
    expect(sampleOf(text, 'backup_proxy_jobs_active')).toBe(0)
    expect(sampleOf(text, 'backup_proxy_threads')).toBe(2)
    expect(text).not.toMatch(/^backup_proxy_metric_deltas_rejected_total\{/m)
    expect(text).not.toContain(sim.password)
    expect(text).not.toContain(dir.path) // remotes are labelled by their task id, never their URL
  })
})

/**
 * startObservability with a real Redis and a real BullMQ queue. The runtime is a plain object with the
 * ObservedRuntime shape (the real ProxyRuntime is exercised by the workers' tests; here its state is
 * what varies).
 */
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createMetrics, metricsHooks, startObservability, type Observability, type RuntimeState } from '../../src/metrics/index.js'
import { startRedis, type RedisService } from '../services/redis.js'

describe('startObservability', () => {
  let redis: RedisService
  let client: Redis
  let queue: Queue
  let obs: Observability
  const warnings: string[] = []
  const logger = { warn: (_obj: unknown, msg?: string) => void warnings.push(msg ?? '') }
  const runtime = {
    state: 'new' as RuntimeState,
    redis: undefined as unknown as Redis,
    activeJobs: 0,
    stats: undefined as { threads: number; busy: number } | undefined,
    poolStats() {
      return this.stats
    },
  }
  const metrics = createMetrics({ defaultMetrics: false })

  beforeAll(async () => {
    redis = await startRedis()
    client = new Redis(redis.url, { maxRetriesPerRequest: null })
    runtime.redis = client
    queue = new Queue('{pool.obs}', { connection: { url: redis.url } })
    await queue.add('backup.run', {})
    obs = await startObservability({ metrics, runtime, queues: [queue], listen: '127.0.0.1:0', logger })
  })

  afterAll(async () => {
    await obs?.close()
    await queue?.close()
    client?.disconnect()
    await redis?.destroy()
  })

  it('is unready until the pool runs, then reports runtime gauges and queue counts at scrape time', async () => {
    const ready = async () => {
      const res = await fetch(`${obs.http.url}/readyz`)
      return { status: res.status, body: (await res.json()) as { reasons: string[] } }
    }
    expect(await ready()).toEqual({ status: 503, body: expect.objectContaining({ reasons: ['the thread pool is not started yet'] }) as unknown })
    runtime.state = 'running'
    runtime.stats = { threads: 4, busy: 3 }
    runtime.activeJobs = 2
    expect((await ready()).status).toBe(200)
    const text = await (await fetch(`${obs.http.url}/metrics`)).text()
    expect(text).toContain('backup_proxy_jobs_active 2')
    expect(text).toContain('backup_proxy_threads_busy 3')
    expect(text).toContain('backup_proxy_threads 4')
    expect(text).toContain('backup_proxy_queue_jobs{queue="{pool.obs}",state="waiting"} 1')
    runtime.state = 'draining'
    expect((await ready()).body.reasons).toEqual(['draining for shutdown: no new jobs are taken'])
  })

  it('metricsHooks feeds thread deltas and finished jobs into the registry and logs refusals', async () => {
    const hooks = metricsHooks(metrics, logger)
    hooks.onMetrics([
      { metric: 'backup_proxy_bytes_written_total', kind: 'counter', labels: { remote: 'r1' }, value: 42 },
      { metric: 'backup_proxy_bytes_written_total', kind: 'counter', labels: { remote: 'https://u:p@h/x' }, value: 1 },
    ])
    hooks.onJobEnd({ kind: 'backup.run', status: 'success', durationSeconds: 3 })
    hooks.onJobEnd({ kind: 'backup.run', status: 'failure', durationSeconds: 1, errorCode: 'E_XAPI', retrying: true })
    const text = await metrics.text()
    expect(text).toContain('backup_proxy_bytes_written_total{remote="r1"} 42')
    expect(text).toContain('backup_proxy_jobs_total{kind="backup.run",status="success"} 1')
    expect(text).toContain('backup_proxy_jobs_total{kind="backup.run",status="failure"} 1')
    expect(text).toContain('backup_proxy_job_duration_seconds_count{kind="backup.run"} 2')
    expect(text).toContain('backup_proxy_errors_total{code="E_XAPI"} 1')
    expect(text).toContain('backup_proxy_retries_total{reason="job_attempt"} 1')
    expect(warnings.some((w) => w.startsWith('metric delta refused'))).toBe(true)
    expect(text).not.toContain('u:p@')
  })
})

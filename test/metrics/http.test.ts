import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigInvalidError } from '../../src/common/errors.js'
import { collectQueueCounts, combineReadiness, createMetrics, parseListen, redisCheck, startHttpServer, type HttpServerHandle } from '../../src/metrics/index.js'
import { waitFor } from '../helpers/ports.js'
import { startRedis, type RedisService } from '../services/redis.js'
import { promtoolCheckMetrics } from './promtool.js'

const TOKEN = 'scrape-secret-token'
// the queue layer names queues {proxy.<id>} (BullMQ refuses ':' in queue names)
const QUEUE = '{proxy.http-test}'

describe('HTTP endpoints', () => {
  let redis: RedisService
  let client: Redis
  let queue: Queue
  let server: HttpServerHandle
  let draining = false
  let poolStarted = true
  const queueErrors: string[] = []
  const metrics = createMetrics()

  beforeAll(async () => {
    redis = await startRedis({ aof: true })
    // as BullMQ connections are configured: commands wait for a reconnection instead of failing
    client = new Redis(redis.url, { maxRetriesPerRequest: null, retryStrategy: () => 100 })
    client.on('error', () => undefined) // connection errors while the test stops Redis are expected; readiness reports them
    queue = new Queue(QUEUE, { connection: { url: redis.url, maxRetriesPerRequest: null, retryStrategy: () => 100 } })
    queue.on('error', (e) => queueErrors.push(e.message))
    await queue.add('backup.run', { n: 1 })
    await queue.add('backup.run', { n: 2 })
    collectQueueCounts(metrics, [queue], { timeoutMs: 500, onError: (e, q) => queueErrors.push(`${q}: ${String(e)}`) })
    const isReady = combineReadiness({
      redis: redisCheck(client),
      pool: () => (poolStarted ? undefined : 'thread pool not started'),
      draining: () => (draining ? 'draining for shutdown' : undefined),
    }, { timeoutMs: 1000 })
    server = await startHttpServer({ listen: '127.0.0.1:0', metrics, isReady, metricsToken: TOKEN })
  })

  afterAll(async () => {
    await server?.close()
    // disconnect (not close): close() would wait for Redis forever if a failed test left it stopped
    await queue?.disconnect()
    client?.disconnect()
    await redis?.destroy()
  })

  it('answers /healthz, 404 and 405', async () => {
    const health = await fetch(`${server.url}/healthz`)
    expect(health.status).toBe(200)
    expect(await health.text()).toBe('ok\n')
    expect((await fetch(`${server.url}/nope`)).status).toBe(404)
    const post = await fetch(`${server.url}/metrics`, { method: 'POST' })
    expect(post.status).toBe(405)
    expect(post.headers.get('allow')).toBe('GET, HEAD')
    const head = await fetch(`${server.url}/healthz`, { method: 'HEAD' })
    expect(head.status).toBe(200)
  })

  it('requires the bearer token on /metrics and serves queue counts that promtool accepts', async () => {
    expect((await fetch(`${server.url}/metrics`)).status).toBe(401)
    expect((await fetch(`${server.url}/metrics`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401)
    const res = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0.0.4/)
    const text = await res.text()
    expect(text).toContain(`backup_proxy_queue_jobs{queue="${QUEUE}",state="waiting"} 2`)
    expect(text).toContain(`backup_proxy_queue_jobs{queue="${QUEUE}",state="active"} 0`)
    const check = await promtoolCheckMetrics(text)
    expect(check.output).toBe('')
    expect(check.code).toBe(0)
  })

  it('/readyz reports draining and a stopped pool, and follows Redis going away and coming back', async () => {
    const ready = async () => {
      const res = await fetch(`${server.url}/readyz`)
      return { status: res.status, body: (await res.json()) as { ready: boolean; reasons: string[] } }
    }
    expect(await ready()).toEqual({ status: 200, body: { ready: true, reasons: [] } })
    draining = true
    poolStarted = false
    expect(await ready()).toEqual({ status: 503, body: { ready: false, reasons: ['thread pool not started', 'draining for shutdown'] } })
    draining = false
    poolStarted = true

    await redis.stop()
    await waitFor('/readyz to turn unready once Redis is stopped', async () => (await ready()).status === 503)
    const down = await ready()
    expect(down.body.ready).toBe(false)
    expect(down.body.reasons.join('\n')).toMatch(/Redis is unreachable/)
    expect(down.body.reasons.join('\n')).not.toContain(redis.url)
    // a scrape still answers while Redis is down: the queue's series are dropped and the failure counted
    const scrape = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })
    expect(scrape.status).toBe(200)
    const text = await scrape.text()
    expect(text).not.toContain(`backup_proxy_queue_jobs{queue="${QUEUE}"`)
    // the failure is counted during this scrape, after the counter was serialized: the next scrape shows it
    const next = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text()
    expect(next).toMatch(/backup_proxy_queue_scrape_errors_total\{queue="\{proxy\.http-test\}"\} [1-9]/)
    expect(queueErrors.some((e) => e.includes(QUEUE))).toBe(true)

    await redis.restart()
    await waitFor('/readyz to be ready again once Redis is back', async () => (await ready()).status === 200)
    expect((await ready()).body).toEqual({ ready: true, reasons: [] })
    // AOF kept the jobs: the counts come back
    await waitFor('queue counts after the restart', async () => {
      const t = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text()
      return t.includes(`backup_proxy_queue_jobs{queue="${QUEUE}",state="waiting"} 2`)
    })
  })

  it('validates the listen address and reports a busy port', async () => {
    expect(parseListen('127.0.0.1:9464')).toEqual({ host: '127.0.0.1', port: 9464 })
    expect(parseListen('[::1]:80')).toEqual({ host: '::1', port: 80 })
    for (const bad of ['9464', 'localhost:99999', 'http://x:1', '']) expect(() => parseListen(bad)).toThrow(ConfigInvalidError)
    const port = new URL(server.url).port
    await expect(startHttpServer({ listen: `127.0.0.1:${port}`, metrics, isReady: () => Promise.resolve({ ready: true, reasons: [] }) })).rejects.toThrow(/http.listen: cannot listen on 127.0.0.1:\d+ \(EADDRINUSE\)/)
  })
})

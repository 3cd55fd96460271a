/**
 * Live proxies and known queues, for `backup-proxy status` and the scaling channel.
 *
 * Each running proxy instance writes a JSON heartbeat (its queues and load) every few seconds to a key
 * that expires after three missed beats, and scores itself in a sorted set by time; `listProxies()`
 * reads the ones seen recently. Queue names are remembered in a set when a proxy serves them or a
 * client enqueues to them. All keys share the `{bp}` hash tag (one Redis Cluster slot).
 */
import { z } from 'zod'
import { registryKeys } from './names.js'
import type { RedisClient as Redis } from './redis.js'

export const HEARTBEAT_INTERVAL_MS = 5000

export const proxyHeartbeatSchema = z.object({
  instance: z.string(),
  proxyId: z.string(),
  pools: z.array(z.string()),
  queues: z.array(z.string()),
  host: z.string(),
  pid: z.number(),
  version: z.string(),
  startedAt: z.number(),
  at: z.number(),
  threads: z.number(),
  busyThreads: z.number(),
  queuedStreams: z.number(),
  concurrency: z.number(),
  activeJobs: z.number(),
  /** ids of the jobs this instance is running */
  jobs: z.array(z.object({ queue: z.string(), jobId: z.string(), kind: z.string() })),
  state: z.enum(['running', 'draining']),
})
export type ProxyHeartbeat = z.infer<typeof proxyHeartbeatSchema>

export const scaleRequestSchema = z
  .object({
    /** proxy id (every instance of it) or one instance */
    proxyId: z.string().optional(),
    instance: z.string().optional(),
    threads: z.number().int().min(1).max(64).optional(),
    concurrency: z.number().int().min(1).max(256).optional(),
  })
  .refine((r) => r.proxyId !== undefined || r.instance !== undefined, 'proxyId or instance is required')
export type ScaleRequest = z.infer<typeof scaleRequestSchema>

export async function writeHeartbeat(redis: Redis, prefix: string, beat: ProxyHeartbeat, intervalMs = HEARTBEAT_INTERVAL_MS): Promise<void> {
  await redis
    .multi()
    .set(registryKeys.proxy(prefix, beat.instance), JSON.stringify(beat), 'PX', intervalMs * 3)
    .zadd(registryKeys.proxies(prefix), String(beat.at), beat.instance)
    .sadd(registryKeys.queues(prefix), ...beat.queues)
    .exec()
}

export async function removeHeartbeat(redis: Redis, prefix: string, instance: string): Promise<void> {
  await redis.multi().del(registryKeys.proxy(prefix, instance)).zrem(registryKeys.proxies(prefix), instance).exec()
}

export async function rememberQueue(redis: Redis, prefix: string, queue: string): Promise<void> {
  await redis.sadd(registryKeys.queues(prefix), queue)
}

export async function knownQueues(redis: Redis, prefix: string): Promise<string[]> {
  return (await redis.smembers(registryKeys.queues(prefix))).sort()
}

/** Proxy instances whose heartbeat is fresh; stale entries are pruned from the index. */
export async function listProxies(redis: Redis, prefix: string, intervalMs = HEARTBEAT_INTERVAL_MS): Promise<ProxyHeartbeat[]> {
  const since = Date.now() - intervalMs * 3
  await redis.zremrangebyscore(registryKeys.proxies(prefix), '-inf', `(${since}`)
  const instances = await redis.zrange(registryKeys.proxies(prefix), '0', '-1')
  if (instances.length === 0) return []
  const raw = await redis.mget(...instances.map((i) => registryKeys.proxy(prefix, i)))
  const out: ProxyHeartbeat[] = []
  for (const text of raw) {
    if (text === null) continue
    try {
      const r = proxyHeartbeatSchema.safeParse(JSON.parse(text))
      if (r.success) out.push(r.data)
    } catch {
      // a corrupt heartbeat is ignored: it expires on its own within three intervals
    }
  }
  return out.sort((a, b) => a.proxyId.localeCompare(b.proxyId) || a.instance.localeCompare(b.instance))
}

/** Asks live proxies to change threads/concurrency; returns how many instances received it. */
export async function publishScale(redis: Redis, prefix: string, request: ScaleRequest): Promise<number> {
  return redis.publish(registryKeys.scale(prefix), JSON.stringify(scaleRequestSchema.parse(request)))
}

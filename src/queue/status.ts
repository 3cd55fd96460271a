/**
 * What `backup-proxy status` shows: per queue (every queue a proxy served or a client enqueued to) the
 * waiting / active / delayed / failed / completed counts, and the live proxy instances with their load
 * (threads busy, jobs running, concurrency), from their heartbeats.
 *
 * The counts are read with plain Redis commands on BullMQ's keys (LLEN of the wait, paused and active
 * lists, ZCARD of the prioritized, delayed, failed and completed sets, as BullMQ's getCounts script
 * does), so `status` needs one Redis connection and not BullMQ: the command stays cheap to start.
 */
import { knownQueues, listProxies, type ProxyHeartbeat } from './registry.js'
import type { RedisClient } from './redis.js'

export const STATUS_STATES = ['waiting', 'prioritized', 'delayed', 'active', 'failed', 'completed'] as const

export interface QueueStatus {
  name: string
  counts: Record<(typeof STATUS_STATES)[number], number>
}

export interface ProxyStatus {
  queues: QueueStatus[]
  proxies: ProxyHeartbeat[]
}

/** The counts of one queue; `prefix` is the BullMQ prefix (config redis.prefix). */
export async function queueCounts(redis: RedisClient, prefix: string, name: string): Promise<QueueStatus['counts']> {
  const key = (s: string) => `${prefix}:${name}:${s}`
  const [wait, paused, prioritized, delayed, active, failed, completed] = await Promise.all([
    redis.llen(key('wait')),
    redis.llen(key('paused')),
    redis.zcard(key('prioritized')),
    redis.zcard(key('delayed')),
    redis.llen(key('active')),
    redis.zcard(key('failed')),
    redis.zcard(key('completed')),
  ])
  return { waiting: wait + paused, prioritized, delayed, active, failed, completed }
}

export async function proxyStatus(client: { redis(): Promise<RedisClient>; prefix: string }): Promise<ProxyStatus> {
  const redis = await client.redis()
  const proxies = await listProxies(redis, client.prefix)
  const names = new Set([...(await knownQueues(redis, client.prefix)), ...proxies.flatMap((p) => p.queues)])
  const queues: QueueStatus[] = []
  for (const name of [...names].sort()) queues.push({ name, counts: await queueCounts(redis, client.prefix, name) })
  return { queues, proxies }
}

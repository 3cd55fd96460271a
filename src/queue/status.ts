/**
 * What `backup-proxy status` shows: per queue (every queue a proxy served or a client enqueued to) the
 * waiting / active / delayed / failed / completed counts, and the live proxy instances with their load
 * (threads busy, jobs running, concurrency), from their heartbeats.
 */
import { Queue } from 'bullmq'
import type { EnqueueClient } from './client.js'
import { knownQueues, listProxies, type ProxyHeartbeat } from './registry.js'

export const STATUS_STATES = ['waiting', 'prioritized', 'delayed', 'active', 'failed', 'completed'] as const

export interface QueueStatus {
  name: string
  counts: Record<(typeof STATUS_STATES)[number], number>
}

export interface ProxyStatus {
  queues: QueueStatus[]
  proxies: ProxyHeartbeat[]
}

export async function proxyStatus(client: EnqueueClient): Promise<ProxyStatus> {
  const redis = await client.redis()
  const proxies = await listProxies(redis, client.prefix)
  const names = new Set([...(await knownQueues(redis, client.prefix)), ...proxies.flatMap((p) => p.queues)])
  const queues: QueueStatus[] = []
  for (const name of [...names].sort()) {
    const q: Queue = client.queue(name)
    const counts = await q.getJobCounts(...STATUS_STATES)
    queues.push({ name, counts: Object.fromEntries(STATUS_STATES.map((s) => [s, counts[s] ?? 0])) as QueueStatus['counts'] })
  }
  return { queues, proxies }
}

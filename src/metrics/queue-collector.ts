/**
 * Queue depth at scrape time: `backup_proxy_queue_jobs{queue,state}` from BullMQ's `getJobCounts` for
 * each queue this proxy serves, read from Redis when Prometheus scrapes (never on a timer, so an idle
 * proxy does no Redis work for metrics).
 *
 * A scrape must answer even when Redis does not: each read is bounded by `timeoutMs`; a queue whose
 * counts could not be read loses its series for that scrape (a stale depth would lie) and
 * `backup_proxy_queue_scrape_errors_total{queue}` goes up; `onError` receives the error to log.
 * Queue names are the braced names of docs/queue.md (`{proxy.site-a}`, `{pool.p1}` on the wire): bounded label values.
 */
import { TimeoutError } from '../common/errors.js'
import { validateLabelValue } from './catalogue.js'
import type { ProxyMetrics } from './registry.js'

/** Job states reported, as BullMQ names them. */
const QUEUE_STATES = ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'completed', 'failed'] as const
type QueueState = (typeof QUEUE_STATES)[number]

/** What is needed of a BullMQ Queue (a `Queue` instance fits). */
export interface CountableQueue {
  readonly name: string
  getJobCounts(...types: QueueState[]): Promise<Record<string, number>>
}

interface QueueCollectorOptions {
  /** bound on each getJobCounts at scrape time; default 2000 ms */
  timeoutMs?: number
  onError?: (error: unknown, queue: string) => void
}

async function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${what} did not answer within ${timeoutMs} ms; check that Redis is reachable`)), timeoutMs)
  })
  // a late rejection of `promise` after the timeout won must not become an unhandled rejection
  promise.catch(() => undefined)
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Registers the queues' counts with the registry; returns a function that unregisters them. */
export function collectQueueCounts(metrics: ProxyMetrics, queues: readonly CountableQueue[], options: QueueCollectorOptions = {}): () => void {
  const timeoutMs = options.timeoutMs ?? 2000
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new RangeError(`timeoutMs must be a whole number > 0, got ${timeoutMs}`)
  for (const q of queues) {
    const problem = validateLabelValue('queue', q.name)
    if (problem !== undefined) throw new RangeError(`collectQueueCounts: queue ${JSON.stringify(q.name)}: ${problem}`)
  }
  const gauge = metrics.gauge('backup_proxy_queue_jobs')
  const errors = metrics.counter('backup_proxy_queue_scrape_errors_total')
  const collectOne = async (queue: CountableQueue): Promise<void> => {
    try {
      const counts = await withTimeout(queue.getJobCounts(...QUEUE_STATES), timeoutMs, `job counts of queue ${queue.name}`)
      for (const state of QUEUE_STATES) gauge.set({ queue: queue.name, state }, counts[state] ?? 0)
    } catch (error) {
      for (const state of QUEUE_STATES) gauge.remove({ queue: queue.name, state })
      errors.inc({ queue: queue.name })
      options.onError?.(error, queue.name)
    }
  }
  return metrics.onCollect('backup_proxy_queue_jobs', async () => {
    await Promise.all(queues.map(collectOne))
  })
}

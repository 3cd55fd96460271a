/**
 * Queue naming and the Redis keys backup-proxy adds beside BullMQ's own.
 *
 * A task names either one proxy (queue `{proxy.<id>}`) or a pool of proxies (queue `{pool.<name>}`). The
 * braces are a Redis Cluster hash tag: every key of one queue (BullMQ's `<prefix>:<queue>:*` and ours
 * below) hashes to one slot. BullMQ refuses `:` in queue names, so the separator inside the tag is `.`
 * (BullMQ refuses `:` in queue names, so a proxy's queue is `{proxy.<id>}` on the wire); ids cannot contain `.`-only tricks
 * because they are checked against ID_RE.
 *
 * Extra keys (all under the configured prefix):
 *   <prefix>:<queue>:bp:cancel:<jobId>   cancel requested (string reason, expires after a day)
 *   <prefix>:<queue>:bp:control          pub/sub channel: cancel requests for running jobs
 *   <prefix>:{bp}:proxies                sorted set: proxy instance -> last heartbeat (ms)
 *   <prefix>:{bp}:proxy:<instance>       JSON heartbeat of one live proxy instance (expires)
 *   <prefix>:{bp}:queues                 set of queue names ever served or enqueued to (for `status`)
 *   <prefix>:{bp}:scale                  pub/sub channel: live scaling requests (threads, concurrency)
 */
import { TaskInvalidError } from '../common/errors.js'
import { bullmqQueueKeys } from './libs.js'

/** Proxy ids, pool names, job/schedule/remote ids: no path separators, no leading dot, no `..`. */
export const ID_RE = /^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,127}$/
export const ID_RULE = 'letters, digits, ".", "_" and "-" (no ".."), 1-128 characters, starting with a letter or digit'

export type QueueTarget = { proxy: string; pool?: never } | { pool: string; proxy?: never }

export function isValidId(id: string): boolean {
  return ID_RE.test(id)
}

/** The BullMQ queue name of a proxy or a pool. */
export function queueName(target: QueueTarget): string {
  if (target.proxy !== undefined) {
    if (!isValidId(target.proxy)) throw new TaskInvalidError(`proxy id ${JSON.stringify(target.proxy)} is invalid: ${ID_RULE}`, { fields: { field: 'proxy' } })
    return `{proxy.${target.proxy}}`
  }
  if (!isValidId(target.pool)) throw new TaskInvalidError(`pool name ${JSON.stringify(target.pool)} is invalid: ${ID_RULE}`, { fields: { field: 'pool' } })
  return `{pool.${target.pool}}`
}

export function proxyQueue(id: string): string {
  return queueName({ proxy: id })
}

export function poolQueue(name: string): string {
  return queueName({ pool: name })
}

/** Parses a queue name back into its target, or undefined when it is not one of ours. */
export function parseQueueName(name: string): QueueTarget | undefined {
  const m = /^\{(proxy|pool)\.(.+)\}$/.exec(name)
  if (m === null || !isValidId(m[2]!)) return undefined
  return m[1] === 'proxy' ? { proxy: m[2]! } : { pool: m[2]! }
}

interface BullKeys {
  readonly events: string
  readonly job: (jobId: string) => string
  readonly logs: (jobId: string) => string
  readonly lock: (jobId: string) => string
}

/** bullKeys() results by prefix and queue: the job runner asks on every job, a process knows few queues. */
const bullKeysMemo = new Map<string, BullKeys>()
const BULL_KEYS_MEMO_MAX = 64

/** BullMQ's own keys of a queue and its jobs, from BullMQ's QueueKeys (never rebuilt by hand). */
export function bullKeys(prefix: string, queue: string): BullKeys {
  const id = `${prefix.length}:${prefix}${queue}`
  let memo = bullKeysMemo.get(id)
  if (memo === undefined) {
    if (bullKeysMemo.size >= BULL_KEYS_MEMO_MAX) bullKeysMemo.clear()
    const keys = new (bullmqQueueKeys())(prefix)
    const job = (jobId: string): string => keys.toKey(queue, jobId)
    memo = Object.freeze({ events: keys.getKeys(queue).events ?? keys.toKey(queue, 'events'), job, logs: (jobId: string) => `${job(jobId)}:logs`, lock: (jobId: string) => `${job(jobId)}:lock` })
    bullKeysMemo.set(id, memo)
  }
  return memo
}

export const queueKeys = {
  cancelFlag: (prefix: string, queue: string, jobId: string): string => `${prefix}:${queue}:bp:cancel:${jobId}`,
  control: (prefix: string, queue: string): string => `${prefix}:${queue}:bp:control`,
  lock: (prefix: string, queue: string, jobId: string): string => bullKeys(prefix, queue).lock(jobId),
}

export const registryKeys = {
  proxies: (prefix: string): string => `${prefix}:{bp}:proxies`,
  proxy: (prefix: string, instance: string): string => `${prefix}:{bp}:proxy:${instance}`,
  queues: (prefix: string): string => `${prefix}:{bp}:queues`,
  scale: (prefix: string): string => `${prefix}:{bp}:scale`,
}

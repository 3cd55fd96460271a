/**
 * The one factory of Redis connections: everything that talks to Redis (proxy workers, the enqueue
 * client and through it `status` and the XO API, the demo) gets its connections here, from config
 * `redis`, in any mode (single, sentinel, cluster; options in redis-options.ts).
 *
 * - `createRedis()` makes our own connection (registry, cancel flags, task logs): an ioredis `Redis`,
 *   or a `Cluster` in cluster mode (type `RedisClient`).
 * - `BullConnection` gives BullMQ its `connection`: the options themselves in single and sentinel mode
 *   (BullMQ opens and closes its connections), one shared ioredis `Cluster` in cluster mode (BullMQ can
 *   only build a Cluster from an instance; it duplicates it for blocking reads and leaves the shared
 *   one to us, closed by `close()` after the queues and workers).
 * - `checkRedis()` refuses, with a coded error saying what to set, a server that does not match the
 *   mode (a cluster node in single mode: E_REDIS_MODE; a plain server in cluster mode: E_REDIS_MODE;
 *   an unknown master name: E_REDIS_SENTINEL), and any node whose eviction policy could silently drop
 *   jobs (E_REDIS_EVICTION), on every node of a cluster.
 * - `redisModeError()` turns a MOVED/ASK/CROSSSLOT reply met later into the same E_REDIS_MODE.
 */
import type { EventEmitter } from 'node:events'
import type { Cluster, Redis } from 'ioredis'
import { BackupProxyError, toError } from '../common/errors.js'
import { ioredis } from './libs.js'
import type { Logger } from '../common/log.js'
import { checkSentinels, sentinelMasterAnswers } from './redis-sentinel.js'
import { clusterOptions, parseHostPort, redisOptions, type ProxyRedisOptions, type RedisConfig } from './redis-options.js'

export { clusterOptions, reconnectDelayMs, redisOptions, type ProxyRedisOptions, type RedisConfig } from './redis-options.js'

/** A connection of any mode: one server (single, sentinel) or a cluster. */
export type RedisClient = Redis | Cluster

/** Our own connection (not BullMQ's); `autoPipelining` sends commands of one tick in one round trip. */
export function createRedis(config: RedisConfig, connectionName?: string, options: { autoPipelining?: boolean } = {}): RedisClient {
  if (config.mode === 'cluster') {
    const { seeds, options: o, nodeOptions } = clusterOptions(config)
    return new (ioredis().Cluster)(seeds, {
      ...o,
      lazyConnect: true,
      redisOptions: { ...nodeOptions, ...(connectionName === undefined ? {} : { connectionName }) },
      ...(options.autoPipelining === true ? { enableAutoPipelining: true } : {}),
    })
  }
  const o: ProxyRedisOptions & { enableAutoPipelining?: boolean } = { ...redisOptions(config), lazyConnect: true }
  if (connectionName !== undefined) o.connectionName = connectionName
  if (options.autoPipelining === true) o.enableAutoPipelining = true
  return new (ioredis().Redis)(o)
}

/** BullMQ's `connection` for the queues and workers of one owner (a proxy, a client). */
export class BullConnection {
  #cluster: Cluster | undefined
  #closed = false

  constructor(
    readonly config: RedisConfig,
    readonly connectionName: string,
  ) {}

  /** Options (single, sentinel) or the owner's shared Cluster (cluster). */
  get connection(): ProxyRedisOptions | Cluster {
    if (this.config.mode !== 'cluster') return redisOptions(this.config)
    if (this.#closed) throw new BackupProxyError('E_INTERNAL', 'this Redis connection is closed')
    this.#cluster ??= createRedis(this.config, this.connectionName) as Cluster
    return this.#cluster
  }

  /** Closes the shared Cluster; call it once every queue and worker using it is closed. */
  async close(): Promise<void> {
    this.#closed = true
    const c = this.#cluster
    this.#cluster = undefined
    if (c !== undefined) await c.quit().catch(() => c.disconnect())
  }

  /** Drops the shared Cluster now (Redis unreachable during a shutdown): its queued commands fail. */
  disconnect(): void {
    this.#closed = true
    this.#cluster?.disconnect()
    this.#cluster = undefined
  }
}

/** A second connection like `client` (for pub/sub), in any mode. */
export function duplicateRedis(client: RedisClient): RedisClient {
  return client instanceof ioredis().Cluster ? client.duplicate() : client.duplicate()
}

/**
 * Logs a connection's errors, once per outage: ioredis reconnects by itself, but an `error` event nobody
 * listens to is printed raw on stderr (and would be every reconnect attempt).
 */
export function logConnectionErrors(client: Pick<EventEmitter, 'on'>, logger: Logger, connection: string): void {
  let down = false
  client.on('ready', () => {
    if (down) logger.info({ connection }, 'Redis connection back')
    down = false
  })
  client.on('error', (error: Error) => {
    if (!down) logger.warn({ err: error, connection }, 'Redis connection error (reconnecting)')
    down = true
  })
}

/**
 * Why a connection failed, in words: the error's message, and for ioredis's "None of startup nodes is
 * available" (cluster) the last node's own error (WRONGPASS, a refused certificate...).
 */
export function failureReason(error: unknown): string {
  const e = toError(error)
  const last = (e as { lastNodeError?: unknown }).lastNodeError
  return last instanceof Error && last.message !== e.message ? `${e.message} (last node: ${last.message})` : e.message
}

/** Where Redis is, safe to print (no password). */
export function describeRedis(config: RedisConfig): string {
  let url: string
  try {
    const u = new URL(config.url)
    u.password = ''
    url = u.toString()
  } catch {
    url = '(invalid redis.url)'
  }
  if (config.mode === 'cluster') return `Redis Cluster (seeds ${config.nodes.length > 0 ? config.nodes.join(',') : url})`
  if (config.mode === 'sentinel') return `master "${config.sentinelName ?? ''}" of sentinels ${config.sentinels.join(',')}`
  return url
}

const MODE_HINT = 'set redis.mode: cluster and redis.nodes to the cluster\'s nodes (env BACKUP_PROXY_REDIS_MODE=cluster, BACKUP_PROXY_REDIS_NODES=host:port,...)'

/** A MOVED/ASK/CROSSSLOT reply means the server is a cluster node reached in single mode. */
export function redisModeError(error: unknown, config: RedisConfig): BackupProxyError | undefined {
  const message = toError(error).message
  if (!/^(MOVED|ASK) \d+ |CROSSSLOT|cluster support disabled/.test(message)) return undefined
  if (config.mode === 'cluster' && !/cluster support disabled/.test(message)) return undefined
  return config.mode === 'cluster'
    ? new BackupProxyError('E_REDIS_MODE', `${describeRedis(config)}: the server is not a cluster node ("${message}"); set redis.mode: single (or sentinel) for it`, { cause: error, fields: { mode: config.mode } })
    : new BackupProxyError('E_REDIS_MODE', `${describeRedis(config)} is a Redis Cluster node (it answered "${message}"); ${MODE_HINT}`, { cause: error, fields: { mode: config.mode } })
}

function infoField(info: string, name: string): string | undefined {
  return new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim()
}

/** INFO of one server, E_REDIS when it cannot be read. */
async function infoOf(client: Redis, config: RedisConfig, where: string): Promise<string> {
  // the reason of a failed connection (a TLS certificate refused...) comes as an `error` event; the
  // command itself only says "Connection is closed"
  let reason: Error | undefined
  const onError = (error: Error) => {
    reason = error
  }
  client.on('error', onError)
  try {
    if (client.status === 'wait') await client.connect()
    return (await client.info('memory')) + (await client.info('server')) + (await client.info('cluster')) + (await client.info('replication'))
  } catch (error) {
    const why = reason !== undefined && reason.message !== (error as Error).message ? `${(error as Error).message} (${reason.message})` : (error as Error).message
    throw new BackupProxyError('E_REDIS', `cannot reach Redis at ${where}: ${why}; check redis.url, redis.mode, credentials and TLS`, { cause: error, fields: { mode: config.mode } })
  } finally {
    client.off('error', onError)
  }
}

/** E_REDIS for a connection that could not be made: names the URL (no password) and what failed. */
export function redisUnreachable(config: RedisConfig, error: unknown): BackupProxyError {
  const reason = failureReason(error)
  return new BackupProxyError('E_REDIS', `cannot reach Redis at ${describeRedis(config)}: ${reason}; check that it runs and check redis.url (REDIS_URL), credentials and TLS`, {
    cause: error,
  })
}

/** Resolves on the connection's next `ready` (undefined) or `error` (the error). */
function nextReadyOrError(client: RedisClient): Promise<Error | undefined> {
  return new Promise((resolve) => {
    const done = (error?: Error) => {
      client.off('ready', onReady)
      client.off('error', onFail)
      client.off('end', onEnd)
      resolve(error)
    }
    const onReady = () => done()
    const onFail = (error: unknown) => done(toError(error ?? 'connection error'))
    // a connection that gives up (no more retries) emits 'end' and neither of the others: never wait on it
    const onEnd = () => done(new Error('the connection ended (no more reconnection attempts)'))
    client.once('ready', onReady)
    client.once('error', onFail)
    client.once('end', onEnd)
  })
}

/** How many errors of a reconnecting Sentinel connection are passed over while the sentinels name a live master. */
const MAX_STALE_SENTINEL_ERRORS = 5

/**
 * Waits for a connection being (re)connected. In sentinel mode an error is final only when the sentinels
 * name no master that answers: after a failover, ioredis ends the round of sentinels it began before the
 * promotion (each named the dead master) with "All sentinels are unreachable", then asks again and finds
 * the new master; failing on that stale error would fail a call made after the failover.
 */
async function waitReconnect(client: RedisClient, config: RedisConfig): Promise<void> {
  // read afresh after each await (the connection moves on meanwhile)
  const status = (): string => client.status
  for (let stale = 0; ; stale++) {
    const error = await nextReadyOrError(client)
    if (error === undefined || status() === 'ready') return
    if (config.mode !== 'sentinel' || stale >= MAX_STALE_SENTINEL_ERRORS || !(await sentinelMasterAnswers(config))) throw error
    if (status() === 'ready') return
    if (status() === 'end') throw error
  }
}

/** The readiness wait in flight per connection: concurrent callers share it (one set of listeners). */
const pendingReady = new WeakMap<RedisClient, Promise<void>>()

async function connectOrWait(client: RedisClient, config: RedisConfig): Promise<void> {
  let lastError: unknown
  const onError = (error: unknown) => (lastError = error)
  client.on('error', onError)
  try {
    if (client.status === 'wait') await client.connect()
    else await waitReconnect(client, config)
  } catch (error) {
    throw redisUnreachable(config, lastError ?? error)
  } finally {
    client.off('error', onError)
  }
}

/**
 * Our own connection, ready: connects a lazy one, waits for one being (re)connected. Fails with
 * E_REDIS (redisUnreachable) on the first connection error instead of queueing commands until Redis is
 * back, so a command-line call or a library caller hears of an outage at once (in sentinel mode, once
 * no master answers: see waitReconnect).
 */
export async function readyRedis<C extends RedisClient>(client: C, config: RedisConfig): Promise<C> {
  if (client.status === 'ready') return client
  if (client.status === 'end' || client.status === 'close') throw new BackupProxyError('E_REDIS', `the connection to Redis at ${describeRedis(config)} is closed`)
  let pending = pendingReady.get(client)
  if (pending === undefined) {
    pending = connectOrWait(client, config).finally(() => pendingReady.delete(client))
    pendingReady.set(client, pending)
  }
  await pending
  return client
}

function checkPolicy(info: string, where: string): string {
  const policy = infoField(info, 'maxmemory_policy') ?? 'unknown'
  if (policy !== 'noeviction') {
    throw new BackupProxyError(
      'E_REDIS_EVICTION',
      `Redis at ${where} has maxmemory-policy "${policy}": it may evict queued jobs and locks. Set "maxmemory-policy noeviction" in redis.conf (or CONFIG SET maxmemory-policy noeviction) on every node and restart the proxy`,
      { fields: { policy, node: where } },
    )
  }
  return policy
}

/**
 * One plain connection to each cluster seed until one answers, to tell "not a cluster" from
 * "unreachable", and to keep why a seed refused us (a wrong password, a certificate): ioredis's Cluster
 * only says "None of startup nodes is available".
 */
async function probeSeed(config: RedisConfig): Promise<{ info?: string; failure?: string }> {
  const { seeds, nodeOptions } = clusterOptions(config)
  let failure: string | undefined
  for (const seed of seeds) {
    const probe = new (ioredis().Redis)({ ...nodeOptions, ...seed, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
    let reason: Error | undefined
    probe.on('error', (error: Error) => (reason ??= error))
    try {
      await probe.connect()
      return { info: await probe.info('cluster') }
    } catch (error) {
      failure ??= `${seed.host}:${seed.port}: ${failureReason(reason ?? error)}`
    } finally {
      probe.disconnect()
    }
  }
  return failure === undefined ? {} : { failure }
}

async function checkCluster(client: Cluster, config: RedisConfig): Promise<{ version: string; policy: string }> {
  const seed = await probeSeed(config)
  if (seed.info !== undefined && infoField(seed.info, 'cluster_enabled') !== '1') {
    throw new BackupProxyError('E_REDIS_MODE', `${describeRedis(config)}: the seed node is not in cluster mode (cluster_enabled:0); set redis.mode: single (or sentinel) for it, or give redis.nodes of the cluster`, { fields: { mode: config.mode } })
  }
  try {
    if (client.status === 'wait') await client.connect()
  } catch (error) {
    const why = failureReason(error) + (seed.failure === undefined ? '' : ` (seed ${seed.failure})`)
    throw redisModeError(error, config) ?? new BackupProxyError('E_REDIS', `cannot reach ${describeRedis(config)}: ${why}; check redis.nodes, redis.natMap, credentials and TLS`, { cause: error, fields: { mode: config.mode } })
  }
  let version = 'unknown'
  for (const node of client.nodes('all')) {
    const where = `${node.options.host ?? '?'}:${node.options.port ?? '?'}`
    const info = await infoOf(node, config, `cluster node ${where}`)
    checkPolicy(info, `cluster node ${where}`)
    version = infoField(info, 'redis_version') ?? version
  }
  return { version, policy: 'noeviction' }
}

/**
 * Checks Redis is usable for durable queues: reachable in the configured mode, and `maxmemory-policy` is
 * `noeviction` on every node (any other policy lets Redis delete queued jobs and locks under memory
 * pressure).
 */
export async function checkRedis(client: RedisClient, config: RedisConfig): Promise<{ version: string; policy: string }> {
  if (client instanceof ioredis().Cluster) return checkCluster(client, config)
  if (config.mode === 'sentinel') await checkSentinels(config)
  const where = describeRedis(config)
  const info = await infoOf(client, config, where)
  if (infoField(info, 'redis_mode') === 'sentinel') {
    throw new BackupProxyError('E_REDIS_MODE', `${where} is a Sentinel, not a data node; set redis.mode: sentinel, redis.sentinels: ${(() => { try { const u = new URL(config.url); return `${u.hostname}:${u.port || '26379'}` } catch { return 'host:port' } })()} and redis.sentinelName`, { fields: { mode: config.mode } })
  }
  if (infoField(info, 'cluster_enabled') === '1') {
    throw new BackupProxyError('E_REDIS_MODE', `${where} is a Redis Cluster node (cluster_enabled:1); ${MODE_HINT}`, { fields: { mode: config.mode } })
  }
  const policy = checkPolicy(info, where)
  if (config.mode === 'sentinel' && infoField(info, 'role') !== 'master') {
    throw new BackupProxyError('E_REDIS_SENTINEL', `${where}: the node the sentinels named is a ${infoField(info, 'role') ?? 'unknown'}, not a master (a failover in progress?); try again`, { fields: { mode: config.mode } })
  }
  return { version: infoField(info, 'redis_version') ?? 'unknown', policy }
}

export { parseHostPort }

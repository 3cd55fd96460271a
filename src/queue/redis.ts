/**
 * Redis connections for the queue: ioredis options built from config `redis` (URL, ACL user, password,
 * TLS with rediss://), with the settings BullMQ needs for workers (`maxRetriesPerRequest: null`) and a
 * reconnect backoff (200 ms doubling up to 5 s, with jitter) so a Redis restart is ridden out instead of
 * crashing the proxy. `checkRedis()` refuses a server whose eviction policy could silently drop jobs.
 */
import type { ConnectionOptions as TlsOptions } from 'node:tls'
import { Redis } from 'ioredis'
import { BackupProxyError, ConfigInvalidError } from '../common/errors.js'
import type { Logger } from '../common/log.js'
import type { Config } from '../config/index.js'

export type RedisConfig = Config['redis']

/** Reconnect delay after `times` failed attempts: 200 ms doubling, capped at 5 s, ±20% jitter. */
export function reconnectDelayMs(times: number): number {
  const base = Math.min(5000, 200 * 2 ** Math.min(times - 1, 5))
  return Math.round(base * (0.8 + Math.random() * 0.4))
}

/** Connection options, accepted by ioredis and by BullMQ's `connection`. */
export interface ProxyRedisOptions {
  host: string
  port: number
  db: number
  username?: string
  password?: string
  tls?: TlsOptions
  maxRetriesPerRequest: null
  enableReadyCheck: boolean
  retryStrategy: (times: number) => number
  connectionName?: string
  lazyConnect?: boolean
}

/** ioredis options for BullMQ (queues, workers, events) and our own commands. */
export function redisOptions(config: RedisConfig): ProxyRedisOptions {
  let url: URL
  try {
    url = new URL(config.url)
  } catch (error) {
    throw new ConfigInvalidError([{ path: 'redis.url', message: 'not a URL (redis://host:6379 or rediss://host:6380)' }], { cause: error })
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new ConfigInvalidError([{ path: 'redis.url', message: `scheme must be redis:// or rediss://, got ${url.protocol}//` }])
  }
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0
  if (!Number.isInteger(db) || db < 0) throw new ConfigInvalidError([{ path: 'redis.url', message: `database must be a number, got "${url.pathname.slice(1)}"` }])
  const username = config.username ?? (url.username === '' ? undefined : decodeURIComponent(url.username))
  const password = config.password ?? (url.password === '' ? undefined : decodeURIComponent(url.password))
  return {
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port: url.port === '' ? 6379 : Number(url.port),
    db,
    ...(username === undefined ? {} : { username }),
    ...(password === undefined ? {} : { password }),
    ...(url.protocol === 'rediss:' ? { tls: { rejectUnauthorized: config.tlsRejectUnauthorized, servername: url.hostname } } : {}),
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    retryStrategy: reconnectDelayMs,
  }
}

/** Our own connection (not BullMQ's); `autoPipelining` sends commands of one tick in one round trip. */
export function createRedis(config: RedisConfig, connectionName?: string, options: { autoPipelining?: boolean } = {}): Redis {
  const o: ProxyRedisOptions & { enableAutoPipelining?: boolean } = { ...redisOptions(config), lazyConnect: true }
  if (connectionName !== undefined) o.connectionName = connectionName
  if (options.autoPipelining === true) o.enableAutoPipelining = true
  return new Redis(o)
}

/**
 * Logs a connection's errors, once per outage: ioredis reconnects by itself, but an `error` event nobody
 * listens to is printed raw on stderr (and would be every reconnect attempt).
 */
export function logConnectionErrors(client: Pick<Redis, 'on'>, logger: Logger, connection: string): void {
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

/** Redis URL safe to print (no password). */
export function describeRedis(config: RedisConfig): string {
  try {
    const u = new URL(config.url)
    u.password = ''
    return u.toString()
  } catch {
    return '(invalid redis.url)'
  }
}

/** E_REDIS for a connection that could not be made: names the URL (no password) and what failed. */
export function redisUnreachable(config: RedisConfig, error: unknown): BackupProxyError {
  const reason = error instanceof Error ? error.message : String(error)
  return new BackupProxyError('E_REDIS', `cannot reach Redis at ${describeRedis(config)}: ${reason}; check that it runs and check redis.url (REDIS_URL), credentials and TLS`, {
    cause: error,
  })
}

/**
 * Our own connection, ready: connects a lazy one, waits for one being (re)connected. Fails with
 * E_REDIS (redisUnreachable) on the first connection error instead of queueing commands until Redis is
 * back, so a command-line call or a library caller hears of an outage at once.
 */
export async function readyRedis(client: Redis, config: RedisConfig): Promise<Redis> {
  if (client.status === 'ready') return client
  if (client.status === 'end' || client.status === 'close') throw new BackupProxyError('E_REDIS', `the connection to Redis at ${describeRedis(config)} is closed`)
  let lastError: unknown
  const onError = (error: unknown) => (lastError = error)
  client.on('error', onError)
  try {
    if (client.status === 'wait') await client.connect()
    else {
      await new Promise<void>((resolve, reject) => {
        const done = (error?: unknown) => {
          client.off('ready', onReady)
          client.off('error', onFail)
          if (error === undefined) resolve()
          else reject(error instanceof Error ? error : new Error(JSON.stringify(error)))
        }
        const onReady = () => done()
        const onFail = (error: unknown) => done(error)
        client.once('ready', onReady)
        client.once('error', onFail)
      })
    }
  } catch (error) {
    throw redisUnreachable(config, lastError ?? error)
  } finally {
    client.off('error', onError)
  }
  return client
}

/**
 * Checks Redis is usable for durable queues: reachable, and `maxmemory-policy` is `noeviction` (any other
 * policy lets Redis delete queued jobs and locks under memory pressure).
 */
export async function checkRedis(client: Redis, config: RedisConfig): Promise<{ version: string; policy: string }> {
  let info: string
  try {
    if (client.status === 'wait') await client.connect()
    info = await client.info('memory')
    info += await client.info('server')
  } catch (error) {
    throw new BackupProxyError('E_REDIS', `cannot reach Redis at ${describeRedis(config)}: ${(error as Error).message}; check redis.url, credentials and TLS`, { cause: error })
  }
  const field = (name: string) => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim()
  const policy = field('maxmemory_policy') ?? 'unknown'
  const version = field('redis_version') ?? 'unknown'
  if (policy !== 'noeviction') {
    throw new BackupProxyError(
      'E_REDIS',
      `Redis at ${describeRedis(config)} has maxmemory-policy "${policy}": it may evict queued jobs and locks. Set "maxmemory-policy noeviction" in redis.conf (or CONFIG SET maxmemory-policy noeviction) and restart the proxy`,
      { fields: { policy } },
    )
  }
  return { version, policy }
}

/**
 * ioredis options from config `redis`, for each mode:
 *
 * - single: one server at `redis.url` (`ProxyRedisOptions`, accepted as is by BullMQ's `connection`);
 * - sentinel: the same options plus `sentinels`, `name` (the master name) and the sentinels' own
 *   credentials and TLS; ioredis asks the sentinels for the master and asks again after a failover;
 * - cluster: seed nodes (`redis.nodes`, else the URL's host:port), `natMap`, and the per-node options
 *   (credentials, TLS) as `redisOptions`.
 *
 * In every mode the URL still gives the scheme (rediss:// = TLS unless `redis.tls` says otherwise),
 * the user, password and database; `redis.username`/`redis.password` override them. Every connection
 * has `maxRetriesPerRequest: null` (BullMQ's workers require it: a command waits for the reconnect
 * instead of failing) and a reconnect backoff (200 ms doubling up to 5 s, with jitter), so a Redis
 * restart or a failover is ridden out instead of crashing the proxy.
 */
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import type { ConnectionOptions as TlsOptions } from 'node:tls'
import type { ClusterOptions, NatMap } from 'ioredis'
import { ConfigInvalidError } from '../common/errors.js'
import type { Config } from '../config/index.js'

export type RedisConfig = Config['redis']

/** Reconnect delay after `times` failed attempts: 200 ms doubling, capped at 5 s, ±20% jitter. */
export function reconnectDelayMs(times: number): number {
  const base = Math.min(5000, 200 * 2 ** Math.min(times - 1, 5))
  return Math.round(base * (0.8 + Math.random() * 0.4))
}

interface HostPort {
  host: string
  port: number
}

/** Connection options, accepted by ioredis and by BullMQ's `connection` (single and sentinel modes). */
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
  // sentinel mode
  sentinels?: HostPort[]
  name?: string
  role?: 'master'
  sentinelUsername?: string
  sentinelPassword?: string
  enableTLSForSentinelMode?: boolean
  sentinelTLS?: TlsOptions
  sentinelRetryStrategy?: (times: number) => number
  failoverDetector?: boolean
  reconnectOnError?: (error: Error) => 2 | false
  natMap?: NatMap
}

/** Parses `host:port` (IPv6 in brackets). */
export function parseHostPort(text: string, path: string): HostPort {
  const m = /^(\[[0-9a-fA-F:]+\]|[^\s:,=]+):(\d{1,5})$/.exec(text.trim())
  const port = Number(m?.[2])
  if (m === null || port < 1 || port > 65535) throw new ConfigInvalidError([{ path, message: `expected host:port, got "${text}"` }])
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port }
}

function parseUrl(config: RedisConfig): URL {
  let url: URL
  try {
    url = new URL(config.url)
  } catch (error) {
    throw new ConfigInvalidError([{ path: 'redis.url', message: 'not a URL (redis://host:6379 or rediss://host:6380)' }], { cause: error })
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new ConfigInvalidError([{ path: 'redis.url', message: `scheme must be redis:// or rediss://, got ${url.protocol}//` }])
  }
  return url
}

function readCa(config: RedisConfig): Buffer | undefined {
  if (config.tlsCaFile === undefined) return undefined
  try {
    return readFileSync(config.tlsCaFile)
  } catch (error) {
    throw new ConfigInvalidError([{ path: 'redis.tlsCaFile', message: `cannot read ${config.tlsCaFile}: ${(error as Error).message}` }], { cause: error })
  }
}

function tlsOptions(config: RedisConfig, servername: string | undefined): TlsOptions {
  const ca = readCa(config)
  return {
    rejectUnauthorized: config.tlsRejectUnauthorized,
    // SNI takes a name, never an address (RFC 6066); without it the address is checked against the certificate
    ...(servername === undefined || servername === '' || isIP(servername) !== 0 ? {} : { servername }),
    ...(ca === undefined ? {} : { ca }),
  }
}

function natMapOf(config: RedisConfig): NatMap | undefined {
  if (config.natMap === undefined) return undefined
  const out: Record<string, HostPort> = {}
  for (const [from, to] of Object.entries(config.natMap)) out[from] = parseHostPort(to, 'redis.natMap')
  return out
}

/** True when the data nodes are reached over TLS. */
function usesTls(config: RedisConfig): boolean {
  return config.tls ?? parseUrl(config).protocol === 'rediss:'
}

/** ioredis options for one server or a Sentinel-managed master (BullMQ's `connection` takes them as is). */
export function redisOptions(config: RedisConfig): ProxyRedisOptions {
  const url = parseUrl(config)
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0
  if (!Number.isInteger(db) || db < 0) throw new ConfigInvalidError([{ path: 'redis.url', message: `database must be a number, got "${url.pathname.slice(1)}"` }])
  const username = config.username ?? (url.username === '' ? undefined : decodeURIComponent(url.username))
  const password = config.password ?? (url.password === '' ? undefined : decodeURIComponent(url.password))
  const host = url.hostname.replace(/^\[|\]$/g, '')
  const tls = usesTls(config)
  const o: ProxyRedisOptions = {
    host,
    port: url.port === '' ? 6379 : Number(url.port),
    db,
    ...(username === undefined ? {} : { username }),
    ...(password === undefined ? {} : { password }),
    // in sentinel mode the master's address comes from the sentinels: no fixed servername
    ...(tls ? { tls: tlsOptions(config, config.mode === 'sentinel' ? undefined : host) } : {}),
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    retryStrategy: reconnectDelayMs,
  }
  if (config.mode !== 'sentinel') return o
  if (config.sentinelName === undefined || config.sentinels.length === 0) {
    throw new ConfigInvalidError([{ path: 'redis.sentinels', message: 'mode sentinel needs redis.sentinels and redis.sentinelName' }])
  }
  const sentinelTls = config.sentinelTls ?? tls
  const natMap = natMapOf(config)
  return {
    ...o,
    sentinels: config.sentinels.map((s) => parseHostPort(s, 'redis.sentinels')),
    name: config.sentinelName,
    role: 'master',
    ...(config.sentinelUsername === undefined ? {} : { sentinelUsername: config.sentinelUsername }),
    ...(config.sentinelPassword === undefined ? {} : { sentinelPassword: config.sentinelPassword }),
    // ioredis: `sentinelTLS` is TLS to the sentinels; the master gets `tls` only with
    // `enableTLSForSentinelMode` (without it, it speaks plain TCP to a TLS-only master)
    ...(tls ? { enableTLSForSentinelMode: true } : {}),
    ...(sentinelTls ? { sentinelTLS: tlsOptions(config, undefined) } : {}),
    sentinelRetryStrategy: reconnectDelayMs,
    // No failoverDetector: its +switch-master handler closes the connector even while a reconnect is
    // asking the sentinels, which ends the connection for good ("Connection is closed", seen in the
    // failover test). A dead master is left on its own; a demoted one answers READONLY, handled below.
    failoverDetector: false,
    // a master demoted to replica (manual failover, old master back): reconnect through the sentinels
    // and resend the command
    reconnectOnError: (error: Error) => (/READONLY/.test(error.message) ? 2 : false),
    ...(natMap === undefined ? {} : { natMap }),
  }
}

/** Options of each node of a cluster. */
interface ClusterNodeOptions {
  username?: string
  password?: string
  tls?: TlsOptions
  maxRetriesPerRequest: null
  enableReadyCheck: boolean
  connectionName?: string
}

/** Seed nodes and options of an ioredis Cluster (mode cluster). */
export function clusterOptions(config: RedisConfig): { seeds: HostPort[]; options: Omit<ClusterOptions, 'redisOptions'>; nodeOptions: ClusterNodeOptions } {
  const single = redisOptions({ ...config, mode: 'single' })
  if (single.db !== 0) throw new ConfigInvalidError([{ path: 'redis.url', message: `Redis Cluster has only database 0, the URL names database ${single.db}` }])
  const seeds = config.nodes.length > 0 ? config.nodes.map((n) => parseHostPort(n, 'redis.nodes')) : [{ host: single.host, port: single.port }]
  const natMap = natMapOf(config)
  return {
    seeds,
    nodeOptions: {
      ...(single.username === undefined ? {} : { username: single.username }),
      ...(single.password === undefined ? {} : { password: single.password }),
      // nodes are announced by IP: the certificate is checked against the name of the seed
      ...(single.tls === undefined ? {} : { tls: tlsOptions(config, config.nodes.length > 0 ? seeds[0]!.host : single.host) }),
      maxRetriesPerRequest: null,
      enableReadyCheck: true,
    },
    options: {
      clusterRetryStrategy: reconnectDelayMs,
      // a failover or a node restart answers CLUSTERDOWN/TRYAGAIN for a while: retry, do not fail jobs
      retryDelayOnClusterDown: 300,
      retryDelayOnTryAgain: 300,
      retryDelayOnFailover: 300,
      slotsRefreshTimeout: 2000,
      enableReadyCheck: true,
      ...(natMap === undefined ? {} : { natMap }),
    },
  }
}

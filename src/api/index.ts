/**
 * The xo-proxy API of `backup-proxy serve`: Xen Orchestra drives this proxy as it drives its own, over
 * HTTPS JSON-RPC (`POST /api/v1`, the `authenticationToken` cookie, NDJSON streams), while the work still
 * flows through the Redis queue (`backup.run` enqueues into this proxy's queue, or `api.pool`).
 *
 * Served only when a token hash is configured (`api.tokenHash` or `api.tokenHashFile`); `startApi`
 * returns undefined otherwise. The certificate comes from `api.certFile`/`api.keyFile`, or is generated
 * once in `api.stateDir` (cert.ts).
 */
import { readFile } from 'node:fs/promises'
import { ConfigInvalidError } from '../common/errors.js'
import type { Logger } from '../common/log.js'
import type { Config } from '../config/index.js'
import { EnqueueClient } from '../queue/client.js'
import type { QueueTarget } from '../queue/names.js'
import type { SealKey } from '../queue/seal.js'
import { BadTokenThrottle, createAuthenticator, type ThrottleOptions } from './auth.js'
import { loadCertificate } from './cert.js'
import { backupMethods } from './methods/backup.js'
import { metadataMethods } from './methods/metadata.js'
import { remoteMethods } from './methods/remote.js'
import { systemMethods } from './methods/system.js'
import { taskMethods } from './methods/task.js'
import { MethodRegistry } from './rpc.js'
import { RunRegistry } from './runs.js'
import { startApiServer } from './server.js'
import { TokenVerifier } from './token.js'

interface ApiOptions {
  config: Config
  logger: Logger
  sealKey: SealKey
  /** bad-token slowdown tuning (tests) */
  throttle?: ThrottleOptions
  /** openssl binary for the self-signed certificate (tests) */
  openssl?: string
}

export interface RunningApi {
  url: string
  port: number
  /** the registry of followed runs (tests, metrics) */
  runs: RunRegistry
  close(): Promise<void>
}

/** The configured token hash (tokenHashFile wins), or undefined when the API is disabled. */
async function loadTokenHash(config: Config): Promise<{ hash: string; where: string } | undefined> {
  const { tokenHash, tokenHashFile } = config.api
  if (tokenHashFile !== undefined) {
    try {
      return { hash: (await readFile(tokenHashFile, 'utf8')).trim(), where: 'api.tokenHashFile' }
    } catch (error) {
      throw new ConfigInvalidError([{ path: 'api.tokenHashFile', message: `cannot read ${tokenHashFile}: ${(error as Error).message}` }], { cause: error })
    }
  }
  return tokenHash === undefined ? undefined : { hash: tokenHash, where: 'api.tokenHash' }
}

/** The queue backup.run feeds. */
function apiTarget(config: Config): QueueTarget {
  return config.api.pool === undefined ? { proxy: config.proxy.id } : { pool: config.api.pool }
}

/** Starts the API when configured (see the header); undefined when no token hash is set. */
export async function startApi(options: ApiOptions): Promise<RunningApi | undefined> {
  const { config } = options
  const logger = options.logger.child({ component: 'api' })
  const stored = await loadTokenHash(config)
  if (stored === undefined) return undefined
  const verifier = new TokenVerifier(stored.hash, stored.where)
  const tls = await loadCertificate({ certFile: config.api.certFile, keyFile: config.api.keyFile, stateDir: config.api.stateDir, ...(options.openssl === undefined ? {} : { openssl: options.openssl }) })
  if (tls.generated) logger.info({ dir: tls.source }, 'API: generated a self-signed certificate (kept for the next starts)')
  const client = new EnqueueClient({ redis: config.redis, sealKey: options.sealKey, attempts: config.workers.attempts, backoffMs: config.workers.backoffMs, logger })
  const runs = new RunRegistry(logger)
  const methods = new MethodRegistry()
  const deps = { config, client, runs, target: apiTarget(config), logger }
  methods.addAll(systemMethods(methods, runs))
  methods.addAll(backupMethods(deps))
  methods.addAll(metadataMethods(deps))
  methods.addAll(taskMethods(runs))
  methods.addAll(remoteMethods())
  let server
  try {
    server = await startApiServer({
      listen: config.api.listen,
      tls,
      auth: createAuthenticator(verifier, new BadTokenThrottle(options.throttle), logger),
      methods,
      logger,
      maxBodyBytes: config.api.maxBodyBytes,
      keepAliveMs: config.api.keepAliveMs,
    })
  } catch (error) {
    await client.close()
    throw error
  }
  logger.info({ url: server.url }, 'xo-proxy API listening')
  return {
    url: server.url,
    port: server.port,
    runs,
    async close() {
      await server.close()
      await runs.close()
      await client.close()
    },
  }
}

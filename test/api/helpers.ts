/** Shared setup of the API tests: a config with a fresh token, a logger whose lines are kept, an API. */
import { Writable } from 'node:stream'
import { createLogger, type Logger } from '../../src/common/log.js'
import { compileConfig, type Config } from '../../src/config/index.js'
import { generateToken, hashToken } from '../../src/api/token.js'
import { SealKey } from '../../src/queue/seal.js'

export interface CapturedLogger {
  logger: Logger
  text: () => string
}

/** A pino logger (debug level) whose output is kept in memory. */
export function capturedLogger(): CapturedLogger {
  const chunks: string[] = []
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString('utf8'))
      cb()
    },
  })
  return { logger: createLogger({ level: 'debug', destination }), text: () => chunks.join('') }
}

export interface ApiFixture {
  token: string
  tokenHash: string
  sealText: string
  sealKey: SealKey
}

export async function apiFixture(): Promise<ApiFixture> {
  const token = generateToken()
  const sealText = SealKey.generate().export()
  return { token, tokenHash: await hashToken(token), sealText, sealKey: SealKey.fromString(sealText) }
}

export function apiConfig(f: ApiFixture, redisUrl: string, stateDir: string, extra: { proxyId?: string; pool?: string; pools?: string[]; maxBodyBytes?: number; keepAliveMs?: number } = {}): Config {
  return compileConfig({
    redis: { url: redisUrl },
    proxy: { id: extra.proxyId ?? `api-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`, pools: extra.pools ?? [] },
    security: { sealKey: f.sealText },
    log: { level: 'silent' },
    workers: { threads: 2, concurrency: 2, attempts: 1, lockDurationMs: 4000, stalledIntervalMs: 1500, backoffMs: 100 },
    api: {
      tokenHash: f.tokenHash,
      listen: '127.0.0.1:0',
      stateDir,
      keepAliveMs: extra.keepAliveMs ?? 0,
      ...(extra.pool === undefined ? {} : { pool: extra.pool }),
      ...(extra.maxBodyBytes === undefined ? {} : { maxBodyBytes: extra.maxBodyBytes }),
    },
  })
}

/**
 * Readiness checks for /readyz. A proxy is ready when it can take jobs: Redis answers, the thread pool
 * has started, and it is not draining for shutdown. Each check returns why it is not ready (a sentence
 * for the operator) or undefined; `combineReadiness` runs them in parallel, bounds each one, and turns
 * a throwing check into a reason instead of an error. Reasons never contain a URL (it could carry a
 * password).
 */
import { errorCode } from '../common/errors.js'

/** Returns why the proxy is not ready, or undefined when this check passes. */
export type ReadinessCheck = () => Promise<string | undefined> | string | undefined

export interface Readiness {
  ready: boolean
  reasons: string[]
}

async function bounded(check: ReadinessCheck, name: string, timeoutMs: number): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`${name}: no answer within ${timeoutMs} ms`), timeoutMs)
  })
  const run = (async () => {
    try {
      return await check()
    } catch (error) {
      const code = errorCode(error)
      return `${name}: check failed${code === undefined ? '' : ` (${code})`}: ${error instanceof Error ? error.message : String(error)}`
    }
  })()
  try {
    return await Promise.race([run, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Combines named checks into the `isReady` function that startHttpServer takes. */
export function combineReadiness(checks: Record<string, ReadinessCheck>, options: { timeoutMs?: number } = {}): () => Promise<Readiness> {
  const timeoutMs = options.timeoutMs ?? 2000
  return async () => {
    const results = await Promise.all(Object.entries(checks).map(([name, check]) => bounded(check, name, timeoutMs)))
    const reasons = results.filter((r): r is string => r !== undefined)
    return { ready: reasons.length === 0, reasons }
  }
}

/** What is needed of an ioredis client (BullMQ's connection fits). */
export interface PingableRedis {
  readonly status?: string
  ping(): Promise<string>
}

/**
 * Redis is reachable: the client is connected (ioredis `status` is 'ready') and answers PING. A
 * disconnected ioredis client would queue the PING until it reconnects, so its status is checked first.
 */
export function redisCheck(client: PingableRedis): ReadinessCheck {
  return async () => {
    if (client.status !== undefined && client.status !== 'ready') return `Redis is unreachable (connection ${client.status}); check that Redis runs and redis.url is right`
    const answer = await client.ping()
    return answer === 'PONG' ? undefined : `Redis answered PING with ${JSON.stringify(answer)}`
  }
}

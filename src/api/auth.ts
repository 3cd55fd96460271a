/**
 * Authentication of API calls, as Xen Orchestra's proxy does it: the token travels in the
 * `authenticationToken` cookie of every request; a missing or wrong one gets `401 Unauthorized`.
 *
 * Repeated bad tokens are slowed down: after the first failure from an address, each of its next
 * requests waits `baseDelayMs * 2^(failures-1)` (capped at `maxDelayMs`) before its token is even
 * checked; a good token resets the count, and an address forgotten after `forgetAfterMs` of quiet starts
 * over. Every failure is logged with the client address and the failure count, never the token. The
 * table of addresses is bounded (oldest forgotten first), so a flood of addresses cannot grow it.
 */
import type { IncomingMessage } from 'node:http'
import type { Logger } from '../common/log.js'
import type { TokenVerifier } from './token.js'

const COOKIE_NAME = 'authenticationToken'

/** The value of one cookie of a request (RFC 6265 `name=value; name2=value2`), undefined when absent. */
function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined || header.length > 16 * 1024) return undefined
  for (const part of header.split(';')) {
    const i = part.indexOf('=')
    if (i === -1 || part.slice(0, i).trim() !== name) continue
    let value = part.slice(i + 1).trim()
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1)
    try {
      return decodeURIComponent(value)
    } catch {
      return value
    }
  }
  return undefined
}

export interface ThrottleOptions {
  baseDelayMs?: number
  maxDelayMs?: number
  forgetAfterMs?: number
  maxAddresses?: number
}

/** Delay before checking the token of an address with `failures` recent failures. */
export function badTokenDelayMs(failures: number, baseDelayMs = 250, maxDelayMs = 10_000): number {
  if (failures <= 0) return 0
  return Math.min(maxDelayMs, baseDelayMs * 2 ** Math.min(failures - 1, 30))
}

export class BadTokenThrottle {
  readonly #failures = new Map<string, { count: number; lastMs: number }>()
  readonly #base: number
  readonly #max: number
  readonly #forgetMs: number
  readonly #maxAddresses: number

  constructor(options: ThrottleOptions = {}) {
    this.#base = options.baseDelayMs ?? 250
    this.#max = options.maxDelayMs ?? 10_000
    this.#forgetMs = options.forgetAfterMs ?? 15 * 60_000
    this.#maxAddresses = options.maxAddresses ?? 10_000
  }

  failures(address: string): number {
    const e = this.#failures.get(address)
    if (e === undefined) return 0
    if (Date.now() - e.lastMs > this.#forgetMs) {
      this.#failures.delete(address)
      return 0
    }
    return e.count
  }

  delayMs(address: string): number {
    return badTokenDelayMs(this.failures(address), this.#base, this.#max)
  }

  fail(address: string): number {
    const count = this.failures(address) + 1
    this.#failures.delete(address)
    if (this.#failures.size >= this.#maxAddresses) {
      const oldest = this.#failures.keys().next()
      if (oldest.done !== true) this.#failures.delete(oldest.value)
    }
    this.#failures.set(address, { count, lastMs: Date.now() })
    return count
  }

  succeed(address: string): void {
    this.#failures.delete(address)
  }
}

export interface Authenticator {
  /** true when the request carries the right token; waits the throttle delay first */
  check(req: IncomingMessage, signal: AbortSignal): Promise<boolean>
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0 || signal.aborted) return resolve()
    const timer = setTimeout(done, ms)
    function done() {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })
}

export function createAuthenticator(verifier: TokenVerifier, throttle: BadTokenThrottle, logger: Logger): Authenticator {
  return {
    async check(req, signal) {
      const address = req.socket.remoteAddress ?? 'unknown'
      await sleep(throttle.delayMs(address), signal)
      const token = cookieValue(req.headers.cookie, COOKIE_NAME)
      if (await verifier.verify(token)) {
        throttle.succeed(address)
        return true
      }
      const failures = throttle.fail(address)
      logger.warn({ remoteAddress: address, failures, tokenPresent: token !== undefined, nextDelayMs: throttle.delayMs(address) }, 'API call with a missing or wrong authentication token: refused (401)')
      return false
    },
  }
}

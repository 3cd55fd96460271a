/**
 * A shutdown while Redis is unreachable. A graceful stop writes to Redis: the heartbeat, each finished
 * job's outcome, BullMQ's and our own QUIT. ioredis keeps commands in its offline queue while it
 * reconnects (our connections retry forever, by design: a proxy rides out a Redis restart), so with
 * Redis down each of those writes waits for Redis to come back, and the shutdown with it: forever, if it
 * does not come back (seen: a proxy asked to stop during an outage never stopped).
 *
 * The watch ends that wait. While the drain runs it looks at the runtime's own connection every
 * `intervalMs`; once that connection is not ready and waiting can gain nothing more (`mayGiveUp()`: no
 * job left running, or the grace period over), it calls `giveUp()` once, which disconnects every
 * connection of the runtime: their queued commands fail at once, the drain goes on through its steps
 * (each failure logged), and the process can exit. A job whose outcome could not be written stays active
 * in Redis; its lock expires and a proxy takes it again as stalled: at-least-once, nothing lost.
 *
 * Polling (not connection events) because the question is "is it down now, and may we stop waiting",
 * asked again whenever either half changes; a poll answers both with one timer, unref'd.
 */
import type { RedisClient } from '../queue/redis.js'

interface RedisLossWatchOptions {
  /** the runtime's own connection; BullMQ's talk to the same server */
  redis: Pick<RedisClient, 'status'>
  /** true once nothing is gained by waiting for Redis (no running job, or the grace period over) */
  mayGiveUp: () => boolean
  /** disconnects every connection; called at most once */
  giveUp: () => void
  intervalMs?: number
}

export class RedisLossWatch {
  readonly #timer: NodeJS.Timeout
  #gaveUp = false

  constructor(options: RedisLossWatchOptions) {
    this.#timer = setInterval(() => {
      if (this.#gaveUp || options.redis.status === 'ready' || !options.mayGiveUp()) return
      this.#gaveUp = true
      clearInterval(this.#timer)
      options.giveUp()
    }, options.intervalMs ?? 500)
    this.#timer.unref()
  }

  /** Whether the watch disconnected the runtime (then the drain's Redis writes failed, on purpose). */
  get gaveUp(): boolean {
    return this.#gaveUp
  }

  stop(): void {
    clearInterval(this.#timer)
  }
}

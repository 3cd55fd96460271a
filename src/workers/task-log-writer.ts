/**
 * The task-log writer of one job attempt (run-job.ts): events in order, each a job log line, each flush
 * one `task-log` entry on the queue's event stream. Batched by the runtime's TaskLogFlusher; the first
 * flush also reads the job's cancel flag.
 */
import type { Logger } from '../common/log.js'
import type { RedisClient as Redis } from '../queue/redis.js'
import type { TaskLogFlusher } from './task-log-flusher.js'

/** Job log lines kept per job (BullMQ's keepLogs of the client's jobs). */
const KEEP_LOG_LINES = 5000

/**
 * Writes task-log events in order: each is a job log line, and each flush is ONE `task-log` entry on the
 * queue's event stream carrying its lines joined by "\n" (JSON never contains a raw newline; the client
 * splits them). Events are batched for up to TASK_LOG_FLUSH_MS (the runtime's TaskLogFlusher); `flush()` writes
 * what is pending now.
 *
 * Commands go to the runtime's auto-pipelined connection: RPUSH + LTRIM + XADD of one flush, and those of
 * every other job flushing in the same tick, leave in one socket write. The first flush also reads the
 * job's cancel flag (a cancel requested between the client's state check and its control message), so
 * that check costs no round trip of its own; it happens at most TASK_LOG_FLUSH_MS after the start.
 */
export class TaskLogWriter {
  #pending: string[] = []
  /** performance.now() of the oldest pending line, while it waits for the flush ticker */
  waitingSince = 0
  #chain: Promise<void> = Promise.resolve()
  #warned = false
  #cancelChecked = false

  constructor(
    private readonly redis: Redis,
    private readonly keys: { logs: string; events: string; cancelFlag: string },
    private readonly jobId: string,
    private readonly logger: () => Logger,
    private readonly onCancelFlag: (reason: string) => void,
    private readonly flusher: TaskLogFlusher,
  ) {}

  write(line: string): void {
    if (this.#pending.push(line) === 1) {
      this.waitingSince = performance.now()
      this.flusher.schedule(this)
    }
  }

  /**
   * When nothing was written yet and the pending lines are exactly the events of `eventsJson` (a JSON
   * array), drops them and returns true (the caller records them elsewhere); otherwise changes nothing
   * and returns false.
   */
  dropIfExactly(eventsJson: string): boolean {
    if (this.#cancelChecked || eventsJson !== `[${this.#pending.join(',')}]`) return false
    this.flusher.forget(this)
    this.#pending = []
    return true
  }

  #drain(): Promise<void> {
    this.flusher.forget(this)
    const lines = this.#pending
    this.#pending = []
    if (lines.length === 0) return this.#chain
    // the first drain: from now on, lines are in Redis (dropIfExactly refuses)
    const checkCancel = !this.#cancelChecked
    this.#cancelChecked = true
    this.#chain = this.#chain.then(async () => {
      const { redis, keys } = this
      const writes = [
        redis.rpush(keys.logs, ...lines),
        redis.ltrim(keys.logs, -KEEP_LOG_LINES, -1),
        redis.xadd(keys.events, 'MAXLEN', '~', '10000', '*', 'event', 'task-log', 'jobId', this.jobId, 'data', lines.join('\n')),
      ]
      const flag = checkCancel ? redis.get(keys.cancelFlag) : undefined
      const results = await Promise.allSettled([...writes, flag ?? Promise.resolve(null)])
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
      if (failed !== undefined) {
        if (!this.#warned) this.logger().warn({ err: failed.reason as unknown, jobId: this.jobId }, 'could not record task-log events (or check for a pending cancel) in Redis')
        this.#warned = true
      }
      const last = results[results.length - 1]
      if (checkCancel && last?.status === 'fulfilled' && typeof last.value === 'string') this.onCancelFlag(last.value)
    })
    return this.#chain
  }

  /** Writes pending events now and waits until everything written so far is in Redis. */
  async flush(): Promise<void> {
    await this.#drain()
  }
}

/**
 * The one timer that flushes the task-log writers of a runtime's jobs (run-job.ts): a writer with
 * pending events waits from TASK_LOG_FLUSH_MS / 2 to TASK_LOG_FLUSH_MS, then is flushed. A timer per job
 * (created, then cleared by almost every short job) cost more than the rest of a short job's
 * bookkeeping. Each ProxyRuntime owns one (no state shared by the runtimes of a process); `close()`
 * stops its timer.
 */

/** Events are held at most this long before they are written (live listeners see them this late). */
const TASK_LOG_FLUSH_MS = 50

interface FlushableWriter {
  /** performance.now() of the oldest pending line */
  readonly waitingSince: number
  flush(): Promise<void>
}

export class TaskLogFlusher {
  readonly #waiting = new Set<FlushableWriter>()
  #ticker: NodeJS.Timeout | undefined

  /** `writer` has pending lines: flush it once they are due. */
  schedule(writer: FlushableWriter): void {
    this.#waiting.add(writer)
    this.#ticker ??= setInterval(() => this.#flushDue(), TASK_LOG_FLUSH_MS / 2)
  }

  /** `writer` flushed (or dropped) its lines by itself. */
  forget(writer: FlushableWriter): void {
    this.#waiting.delete(writer)
  }

  #flushDue(): void {
    const due = performance.now() - TASK_LOG_FLUSH_MS / 2
    for (const writer of this.#waiting) {
      if (writer.waitingSince <= due) void writer.flush()
    }
    if (this.#waiting.size === 0) this.close()
  }

  /** Stops the timer (a later schedule() starts it again). */
  close(): void {
    clearInterval(this.#ticker)
    this.#ticker = undefined
  }
}

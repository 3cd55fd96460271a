/**
 * Thread side of metrics: records counter increments, histogram observations and gauge increments in
 * a worker thread and sends them to the main thread as batched deltas (see deltas.ts).
 *
 * Counters and gauges with the same metric and labels are summed between flushes (a 2 MiB block
 * written costs one map update, not one message); histogram observations are kept one by one because
 * they cannot be summed. A batch is sent every `flushIntervalMs` (timer unref'd, so it never keeps a
 * thread alive), when `maxPending` observations accumulate, on `flush()` and on `close()`. Call
 * `flush()` before a task resolves and `close()` before the thread exits: then nothing is lost.
 * Each recorded value is sent exactly once: the pending batch is swapped out before `send` is called.
 *
 * Nothing is validated here beyond finiteness: the main thread validates names and labels against the
 * catalogue and counts what it refuses.
 */
import { toError } from '../common/errors.js'
import type { MetricKind } from './catalogue.js'
import type { MetricDelta, MetricsMessage } from './deltas.js'

interface ThreadMetricsRecorderOptions {
  /** how often pending deltas are sent; default 1000 ms; 0 disables the timer */
  flushIntervalMs?: number
  /** pending histogram observations that trigger a send; default 1000 */
  maxPending?: number
}

export interface ThreadMetricsRecorder {
  /** counter increment (value >= 0) */
  inc(metric: string, labels?: Record<string, string>, value?: number): void
  /** one histogram observation */
  observe(metric: string, labels: Record<string, string>, value: number): void
  /** gauge increment (may be negative) */
  gaugeAdd(metric: string, labels: Record<string, string>, value: number): void
  /** starts a timer; the returned function observes the elapsed seconds in `metric` and returns them */
  startTimer(metric: string, labels?: Record<string, string>): () => number
  /** sends what is pending now; throws if a previous timed send failed */
  flush(): void
  /** flushes and stops the timer; later writes are sent at once */
  close(): void
}

interface Summed {
  metric: string
  kind: MetricKind
  labels: Record<string, string>
  value: number
}

function key(metric: string, labels: Record<string, string>): string {
  return `${metric}\u0000${JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))}`
}

/** Deltas recorded since the last send: counters and gauges summed by metric and labels, histogram observations one by one. */
class PendingDeltas {
  #summed = new Map<string, Summed>()
  #observations: MetricDelta[] = []

  get observations(): number {
    return this.#observations.length
  }

  add(metric: string, kind: MetricKind, labels: Record<string, string>, value: number): void {
    const k = key(metric, labels)
    const entry = this.#summed.get(k)
    if (entry === undefined) this.#summed.set(k, { metric, kind, labels: { ...labels }, value })
    else entry.value += value
  }

  observe(metric: string, labels: Record<string, string>, value: number): void {
    this.#observations.push({ metric, kind: 'histogram', labels: { ...labels }, value })
  }

  /** Swaps the pending deltas out (sums that came back to zero are dropped): each is taken once. */
  take(): MetricDelta[] {
    if (this.#summed.size === 0 && this.#observations.length === 0) return []
    const batch = this.#summed
    const observed = this.#observations
    this.#summed = new Map()
    this.#observations = []
    const deltas: MetricDelta[] = []
    for (const s of batch.values()) if (s.value !== 0) deltas.push({ metric: s.metric, kind: s.kind, labels: s.labels, value: s.value })
    deltas.push(...observed)
    return deltas
  }

  /** Puts back deltas whose send failed, so a later flush retries them. */
  putBack(deltas: readonly MetricDelta[]): void {
    for (const d of deltas) {
      if (d.kind === 'histogram') this.#observations.push(d)
      else this.add(d.metric, d.kind, d.labels, d.value)
    }
  }
}

function checkOptions(options: ThreadMetricsRecorderOptions): Required<ThreadMetricsRecorderOptions> {
  const flushIntervalMs = options.flushIntervalMs ?? 1000
  const maxPending = options.maxPending ?? 1000
  if (!Number.isInteger(flushIntervalMs) || flushIntervalMs < 0) throw new RangeError(`flushIntervalMs must be a whole number >= 0, got ${flushIntervalMs}`)
  if (!Number.isInteger(maxPending) || maxPending < 1) throw new RangeError(`maxPending must be a whole number >= 1, got ${maxPending}`)
  return { flushIntervalMs, maxPending }
}

function checkValue(metric: string, value: number): void {
  if (!Number.isFinite(value)) throw new RangeError(`metric ${metric}: value must be a finite number, got ${value}`)
}

export function createThreadMetricsRecorder(send: (message: MetricsMessage) => void, options: ThreadMetricsRecorderOptions = {}): ThreadMetricsRecorder {
  const { flushIntervalMs, maxPending } = checkOptions(options)
  const pending = new PendingDeltas()
  let closed = false
  let timedSendError: unknown

  const sendPending = (): void => {
    const deltas = pending.take()
    if (deltas.length === 0) return
    try {
      send({ type: 'metrics', deltas })
    } catch (error) {
      // put them back so a later flush can retry; the caller of flush() sees the error
      pending.putBack(deltas)
      throw error
    }
  }
  const flush = (): void => {
    if (timedSendError !== undefined) {
      const error = toError(timedSendError)
      timedSendError = undefined
      throw error
    }
    sendPending()
  }
  const timer =
    flushIntervalMs > 0
      ? setInterval(() => {
          try {
            sendPending()
          } catch (error) {
            timedSendError = error
          }
        }, flushIntervalMs)
      : undefined
  timer?.unref()
  const afterWrite = (): void => {
    if (closed || pending.observations >= maxPending) sendPending()
  }
  const observe = (metric: string, labels: Record<string, string>, value: number): void => {
    checkValue(metric, value)
    pending.observe(metric, labels, value)
    afterWrite()
  }

  return {
    inc(metric, labels = {}, value = 1) {
      checkValue(metric, value)
      if (value < 0) throw new RangeError(`counter ${metric} cannot decrease (got ${value})`)
      pending.add(metric, 'counter', labels, value)
      afterWrite()
    },
    observe,
    gaugeAdd(metric, labels, value) {
      checkValue(metric, value)
      pending.add(metric, 'gauge', labels, value)
      afterWrite()
    },
    startTimer(metric, labels = {}) {
      const start = performance.now()
      return () => {
        const seconds = (performance.now() - start) / 1000
        observe(metric, labels, seconds)
        return seconds
      }
    },
    flush,
    close() {
      if (timer !== undefined) clearInterval(timer)
      closed = true
      flush()
    },
  }
}

/**
 * The contract of a stream task that runs inside a Piscina thread, and the context it receives.
 *
 * A thread task module default-exports `(input, ctx) => Promise<output>`. `ctx.signal` aborts when the
 * main thread asks to cancel (operator cancel, shutdown, timeout): the task must stop its stream, remove
 * its temporaries and throw (a CancelledError, or let `ctx.throwIfCancelled()` do it). Progress and
 * metric deltas go to the main thread over the task's MessagePort; metric deltas are batched and flushed
 * every `METRICS_FLUSH_MS` and when the task ends, so a hot loop can record per block at no cost.
 */
import type { JsonValue } from '../common/errors.js'
import type { MetricDelta, MetricKind } from './messages.js'

export const METRICS_FLUSH_MS = 500

export interface ThreadTaskContext {
  /** aborted by a cooperative cancel from the main thread; `reason` is a CancelledError */
  signal: AbortSignal
  /** throws the CancelledError when cancelled */
  throwIfCancelled: () => void
  /** progress for the job (forwarded as-is to the onProgress callback of pool.run) */
  progress: (progress: JsonValue) => void
  /** counters and histograms: batched deltas */
  counter: (metric: string, labels: Record<string, string>, value?: number) => void
  observe: (metric: string, labels: Record<string, string>, value: number) => void
  /** gauges as deltas (+1 when starting something, -1 when done) */
  gauge: (metric: string, labels: Record<string, string>, delta: number) => void
  /** Piscina thread id, for logs */
  threadId: number
}

export type ThreadTask<I, O> = (input: I, ctx: ThreadTaskContext) => Promise<O>

/** Accumulates metric deltas between flushes: one entry per (metric, kind, labels). */
export class MetricBatch {
  #pending = new Map<string, MetricDelta>()
  #observations: MetricDelta[] = []

  add(metric: string, kind: MetricKind, labels: Record<string, string>, value: number): void {
    if (kind === 'histogram') {
      // each observation counts separately in a histogram
      this.#observations.push({ metric, kind, labels, value })
      return
    }
    const key = `${kind}\0${metric}\0${JSON.stringify(labels)}`
    const d = this.#pending.get(key)
    if (d === undefined) this.#pending.set(key, { metric, kind, labels, value })
    else d.value += value
  }

  get size(): number {
    return this.#pending.size + this.#observations.length
  }

  take(): MetricDelta[] {
    const out = [...this.#pending.values(), ...this.#observations]
    this.#pending = new Map()
    this.#observations = []
    return out
  }
}

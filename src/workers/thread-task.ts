/**
 * The contract of a stream task that runs inside a Piscina thread, and the context it receives.
 *
 * A thread task module default-exports `(input, ctx) => Promise<output>`. `ctx.signal` aborts when the
 * main thread asks to cancel (operator cancel, shutdown, timeout): the task must stop its stream, remove
 * its temporaries and throw (a CancelledError, or let `ctx.throwIfCancelled()` do it). Progress and
 * metric deltas go to the main thread over the task's MessagePort; metric deltas are batched (the metrics
 * module's thread recorder) and flushed every `METRICS_FLUSH_MS` and when the task ends, so a hot loop
 * can record per block at no cost.
 */
import type { JsonValue } from '../common/errors.js'

export const METRICS_FLUSH_MS = 500

export interface ThreadTaskContext<P = JsonValue> {
  /** aborted by a cooperative cancel from the main thread; `reason` is a CancelledError */
  signal: AbortSignal
  /** throws the CancelledError when cancelled */
  throwIfCancelled: () => void
  /** progress for the job (forwarded as-is to the onProgress callback of pool.run; plain data, structured-cloned) */
  progress: (progress: P) => void
  /** counters and histograms: batched deltas */
  counter: (metric: string, labels: Record<string, string>, value?: number) => void
  observe: (metric: string, labels: Record<string, string>, value: number) => void
  /** gauges as deltas (+1 when starting something, -1 when done) */
  gauge: (metric: string, labels: Record<string, string>, delta: number) => void
  /** Piscina thread id, for logs */
  threadId: number
}

/** A stream task taking `I`, resolving to `O`, posting progress of type `P` (all plain data: they cross threads). */
export type ThreadTask<I, O, P = JsonValue> = (input: I, ctx: ThreadTaskContext<P>) => Promise<O>

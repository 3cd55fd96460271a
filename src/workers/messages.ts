/**
 * Messages on the MessagePort between the main thread and one stream task running in a Piscina thread.
 * One MessageChannel per task: the thread keeps one end, the main thread the other, so messages of
 * different tasks never mix.
 *
 *   thread → main: `started`, `progress`, `metrics` (metric deltas the main thread adds to its registry)
 *   main → thread: `cancel` (cooperative: the task stops its stream, cleans up, and rejects with E_CANCELLED)
 *
 * The task's outcome (output, or a serialized error rebuilt with deserializeError on the main side) and
 * its last metric deltas are the Piscina task's result (`ThreadResult`): no message of their own. Every
 * message the task posted on its port is already queued on the main side when that result arrives
 * (a post enqueues on the receiving port synchronously), so the main thread drains the port
 * (receiveMessageOnPort) before it settles: progress and metrics are still handled before the outcome.
 */
import type { MessagePort } from 'node:worker_threads'
import type { JsonValue, SerializedError } from '../common/errors.js'

// The metric delta message is defined once, by the metrics module that applies it.
export type { MetricDelta, MetricsMessage } from '../metrics/deltas.js'
export type { MetricKind } from '../metrics/catalogue.js'
import type { MetricDelta, MetricsMessage } from '../metrics/deltas.js'

export interface ProgressMessage {
  type: 'progress'
  progress: JsonValue
}

export interface StartedMessage {
  type: 'started'
  threadId: number
}

export type ThreadToMainMessage = MetricsMessage | ProgressMessage | StartedMessage

export interface CancelMessage {
  type: 'cancel'
  /** why: operator cancel, shutdown, timeout (becomes the CancelledError's message) */
  reason: string
}

export type MainToThreadMessage = CancelMessage

/** What the main thread hands Piscina for one task (the port is in the transfer list). */
export interface ThreadTaskEnvelope {
  taskName: string
  input: unknown
  port: MessagePort
}

export type ThreadOutcome = { ok: true; output: unknown } | { ok: false; error: SerializedError }

/** What the thread entry returns to Piscina: the outcome and the metric deltas not yet sent. */
export interface ThreadResult {
  outcome: ThreadOutcome
  deltas: MetricDelta[]
}

export function isThreadToMainMessage(value: unknown): value is ThreadToMainMessage {
  if (typeof value !== 'object' || value === null) return false
  const type = (value as { type?: unknown }).type
  return type === 'metrics' || type === 'progress' || type === 'started'
}

export function isThreadResult(value: unknown): value is ThreadResult {
  if (typeof value !== 'object' || value === null) return false
  const { outcome, deltas } = value as { outcome?: unknown; deltas?: unknown }
  return typeof outcome === 'object' && outcome !== null && typeof (outcome as { ok?: unknown }).ok === 'boolean' && Array.isArray(deltas)
}

export function isMainToThreadMessage(value: unknown): value is MainToThreadMessage {
  return typeof value === 'object' && value !== null && (value as { type?: unknown }).type === 'cancel'
}

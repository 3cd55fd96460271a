/**
 * Messages on the MessagePort between the main thread and one stream task running in a Piscina thread.
 * One MessageChannel per task: the thread keeps one end, the main thread the other, so messages of
 * different tasks never mix.
 *
 *   thread → main: `started`, `progress`, `metrics` (metric deltas the main thread adds to its registry)
 *   main → thread: `cancel` (cooperative: the task stops its stream, cleans up, and rejects with E_CANCELLED)
 *
 * The task's outcome is the last message on the port (`done`: output, or a serialized error rebuilt with
 * deserializeError on the main side), so it is ordered after every progress and metrics message; the
 * Piscina promise only reports a thread that died.
 */
import type { MessagePort } from 'node:worker_threads'
import type { JsonValue, SerializedError } from '../common/errors.js'

// The metric delta message is defined once, by the metrics module that applies it.
export type { MetricDelta, MetricsMessage } from '../metrics/deltas.js'
export type { MetricKind } from '../metrics/catalogue.js'
import type { MetricsMessage } from '../metrics/deltas.js'

export interface ProgressMessage {
  type: 'progress'
  progress: JsonValue
}

export interface StartedMessage {
  type: 'started'
  threadId: number
}

/** Last message of a task: its outcome (after every progress and metrics message). */
export interface DoneMessage {
  type: 'done'
  outcome: ThreadOutcome
}

export type ThreadToMainMessage = MetricsMessage | ProgressMessage | StartedMessage | DoneMessage

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

export function isThreadToMainMessage(value: unknown): value is ThreadToMainMessage {
  if (typeof value !== 'object' || value === null) return false
  const type = (value as { type?: unknown }).type
  return type === 'metrics' || type === 'progress' || type === 'started' || type === 'done'
}

export function isMainToThreadMessage(value: unknown): value is MainToThreadMessage {
  return typeof value === 'object' && value !== null && (value as { type?: unknown }).type === 'cancel'
}

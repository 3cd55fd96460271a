/**
 * Messages on the MessagePort between the main thread and one stream task running in a Piscina thread,
 * typed once here for both sides: `pool.ts` (main) and `thread-entry.ts` (thread). One MessageChannel
 * per task: the thread keeps one end, the main thread the other, so messages of different tasks never mix.
 *
 *   main → thread (Piscina's task): the `ThreadTaskEnvelope` — a registered task name, the input that
 *     task takes (thread-tasks.ts types it by name) and the task's port
 *   thread → main: `started`, `progress` (the task's own progress type), `metrics` (metric deltas the
 *     main thread adds to its registry)
 *   main → thread: `cancel` (cooperative: the task stops its stream, cleans up, and rejects with E_CANCELLED)
 *
 * The task's outcome (output, or a serialized error rebuilt with deserializeError on the main side) and
 * its last metric deltas are the Piscina task's result (`ThreadResult`): no message of their own. Every
 * message the task posted on its port is already queued on the main side when that result arrives
 * (a post enqueues on the receiving port synchronously), so the main thread drains the port
 * (receiveMessageOnPort) before it settles: progress and metrics are still handled before the outcome.
 *
 * What crosses a port is a structured clone: each side checks the shape of what it receives (the guards
 * below) before using it; the payloads' types come from the task registry, the same on both sides.
 */
import { MessagePort } from 'node:worker_threads'
import type { SerializedError } from '../common/errors.js'
import type { ThreadTaskInput, ThreadTaskName, ThreadTaskOutput, ThreadTaskProgress } from './thread-tasks.js'

// The metric delta message is defined once, by the metrics module that applies it.
export type { MetricDelta } from '../metrics/deltas.js'
import type { MetricDelta, MetricsMessage } from '../metrics/deltas.js'

interface ProgressMessage<P> {
  type: 'progress'
  progress: P
}

interface StartedMessage {
  type: 'started'
  threadId: number
}

/** What a task of kind N posts to the main thread. */
export type ThreadToMainMessage<N extends ThreadTaskName = ThreadTaskName> = MetricsMessage | ProgressMessage<ThreadTaskProgress<N>> | StartedMessage

interface CancelMessage {
  type: 'cancel'
  /** why: operator cancel, shutdown, timeout (becomes the CancelledError's message) */
  reason: string
}

export type MainToThreadMessage = CancelMessage

/** What the main thread hands Piscina for one task (the port is in the transfer list). */
export interface ThreadTaskEnvelope<N extends ThreadTaskName = ThreadTaskName> {
  taskName: N
  input: ThreadTaskInput<N>
  port: MessagePort
}

export type ThreadOutcome<O> = { ok: true; output: O } | { ok: false; error: SerializedError }

/** What the thread entry returns to Piscina: the outcome and the metric deltas not yet sent. */
export interface ThreadResult<O> {
  outcome: ThreadOutcome<O>
  deltas: MetricDelta[]
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null

/**
 * The thread side's check of what Piscina hands it: a task name `isTaskName` accepts (the thread's
 * registry: the main thread never loads it), an input, a port.
 */
export function isThreadTaskEnvelope(value: unknown, isTaskName: (name: unknown) => name is ThreadTaskName): value is ThreadTaskEnvelope {
  return isObject(value) && isTaskName(value.taskName) && 'input' in value && value.port instanceof MessagePort
}

/** The main side's check of a message of the task `taskName` (its progress is that task's type). */
export function isThreadToMainMessage<N extends ThreadTaskName>(value: unknown, taskName: N): value is ThreadToMainMessage<N> {
  void taskName // names the payload type; every task posts the same message kinds
  if (!isObject(value)) return false
  switch (value.type) {
    case 'metrics':
      return Array.isArray(value.deltas)
    case 'progress':
      return 'progress' in value
    case 'started':
      return typeof value.threadId === 'number'
    default:
      return false
  }
}

/** The main side's check of the result of the task `taskName` (its output is that task's type). */
export function isThreadResult<N extends ThreadTaskName>(value: unknown, taskName: N): value is ThreadResult<ThreadTaskOutput<N>> {
  void taskName // names the output type
  if (!isObject(value) || !Array.isArray(value.deltas) || !isObject(value.outcome)) return false
  const { outcome } = value
  return outcome.ok === true ? 'output' in outcome : outcome.ok === false && isObject(outcome.error) && typeof outcome.error.message === 'string'
}

export function isMainToThreadMessage(value: unknown): value is MainToThreadMessage {
  return isObject(value) && value.type === 'cancel' && typeof value.reason === 'string'
}

/**
 * Releasing a thread's resources before it is torn down (opened remotes: NFS unmount, SMB logoff, S3
 * client destroyed). Piscina owns each thread's parentPort and terminates threads without running any
 * of their code, so the pool asks on a BroadcastChannel of this name, naming the threads it means; each
 * of them, once it has no task running, closes what it holds and answers.
 */
export const THREAD_CONTROL_CHANNEL = 'backup-proxy:stream-threads'

export interface ReleaseRequest {
  type: 'release'
  /** answers carry it: several pools of a process may ask at once */
  requestId: string
  threadIds: number[]
}

export interface ReleasedReply {
  type: 'released'
  requestId: string
  threadId: number
}

export function isReleaseRequest(value: unknown): value is ReleaseRequest {
  return isObject(value) && value.type === 'release' && typeof value.requestId === 'string' && Array.isArray(value.threadIds) && value.threadIds.every((id) => typeof id === 'number')
}

export function isReleasedReply(value: unknown): value is ReleasedReply {
  return isObject(value) && value.type === 'released' && typeof value.requestId === 'string' && typeof value.threadId === 'number'
}

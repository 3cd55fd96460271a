/**
 * Entry of every Piscina thread: receives a `ThreadTaskEnvelope`, looks the named task up in the registry
 * (thread-tasks.ts), and runs it with a `ThreadTaskContext` wired to the task's own MessagePort:
 * a `cancel` message aborts `ctx.signal` (cooperative cancel: the task cleans up and throws), progress
 * and batched metric deltas go back to the main thread. The outcome (output or serialized error) and the
 * last metric deltas are the returned `ThreadResult`; the main thread handles every message posted
 * before it first (messages.ts).
 */
import { threadId } from 'node:worker_threads'
import { BackupProxyError, CancelledError, serializeError } from '../common/errors.js'
import { isMainToThreadMessage, type MetricDelta, type ThreadResult, type ThreadTaskEnvelope, type ThreadOutcome } from './messages.js'
import { createThreadMetricsRecorder } from '../metrics/thread-recorder.js'
import { METRICS_FLUSH_MS, type ThreadTask, type ThreadTaskContext } from './thread-task.js'
import { threadTasks } from './thread-tasks.js'

function load(name: string): ThreadTask<unknown, unknown> {
  if (!Object.hasOwn(threadTasks, name)) {
    throw new BackupProxyError('E_INTERNAL', `unknown thread task "${name}"; known: ${Object.keys(threadTasks).join(', ')} (register it in src/workers/thread-tasks.ts)`)
  }
  return threadTasks[name as keyof typeof threadTasks] as unknown as ThreadTask<unknown, unknown>
}

export default async function runThreadTask(envelope: ThreadTaskEnvelope): Promise<ThreadResult> {
  const { port } = envelope
  const controller = new AbortController()
  port.on('message', (message: unknown) => {
    if (isMainToThreadMessage(message) && !controller.signal.aborted) controller.abort(new CancelledError(message.reason))
  })
  // metric deltas are batched by the metrics module's recorder (the one its tests exercise); once the
  // task ended, what is left goes back in the ThreadResult instead of a message
  const ended: { deltas?: MetricDelta[] } = {}
  const recorder = createThreadMetricsRecorder(
    (message) => {
      if (ended.deltas === undefined) port.postMessage(message)
      else ended.deltas.push(...message.deltas)
    },
    { flushIntervalMs: METRICS_FLUSH_MS },
  )
  const ctx: ThreadTaskContext = {
    signal: controller.signal,
    throwIfCancelled: () => {
      if (controller.signal.aborted) throw controller.signal.reason as Error
    },
    progress: (progress) => port.postMessage({ type: 'progress', progress }),
    counter: (metric, labels, value = 1) => recorder.inc(metric, labels, value),
    observe: (metric, labels, value) => recorder.observe(metric, labels, value),
    gauge: (metric, labels, delta) => recorder.gaugeAdd(metric, labels, delta),
    threadId,
  }
  port.postMessage({ type: 'started', threadId })
  let outcome: ThreadOutcome
  try {
    const task = load(envelope.taskName)
    ctx.throwIfCancelled()
    outcome = { ok: true, output: await task(envelope.input, ctx) }
  } catch (error) {
    outcome = { ok: false, error: serializeError(error) }
  }
  const deltas: MetricDelta[] = []
  ended.deltas = deltas
  recorder.close()
  port.close()
  return { outcome, deltas }
}

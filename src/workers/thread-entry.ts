/**
 * Entry of every Piscina thread: receives a `ThreadTaskEnvelope`, checks it names a task of the registry
 * (thread-tasks.ts), and runs that task with a `ThreadTaskContext` wired to the task's own MessagePort:
 * a `cancel` message aborts `ctx.signal` (cooperative cancel: the task cleans up and throws), progress
 * and batched metric deltas go back to the main thread. The outcome (output or serialized error) and the
 * last metric deltas are the returned `ThreadResult`; the main thread handles every message posted
 * before it first (messages.ts). Asked by the pool before it closes, the thread releases what it holds
 * (its opened remotes) once no task is running on it (thread-release.ts).
 */
import { receiveMessageOnPort, threadId, type MessagePort } from 'node:worker_threads'
import { BackupProxyError, CancelledError, serializeError } from '../common/errors.js'
import { isMainToThreadMessage, isThreadTaskEnvelope, type MetricDelta, type ThreadOutcome, type ThreadResult, type ThreadTaskEnvelope, type ThreadToMainMessage } from './messages.js'
import { createThreadMetricsRecorder, type ThreadMetricsRecorder } from '../metrics/thread-recorder.js'
import { METRICS_FLUSH_MS, type ThreadTaskContext } from './thread-task.js'
import { isThreadTaskName, releaseThreadResources, threadTasks, type ThreadTaskName, type ThreadTaskOutput, type ThreadTaskProgress } from './thread-tasks.js'
import { serveReleases } from './thread-release.js'

/** Tasks running on this thread (up to the pool's streams per thread: pool.ts, streamLayout). */
let running = 0
const releases = serveReleases(releaseThreadResources, () => running > 0)

/** The task's port, typed: what the thread posts is a `ThreadToMainMessage` of its task. */
function poster<N extends ThreadTaskName>(port: MessagePort): (message: ThreadToMainMessage<N>) => void {
  return (message) => port.postMessage(message)
}

/**
 * Metric deltas are batched by the metrics module's recorder (the one its tests exercise); once the task
 * ended, what is left goes back in the ThreadResult instead of a message (`takeRest`).
 */
function metricsRecorder<N extends ThreadTaskName>(post: (message: ThreadToMainMessage<N>) => void): { recorder: ThreadMetricsRecorder; takeRest: () => MetricDelta[] } {
  let rest: MetricDelta[] | undefined
  const recorder = createThreadMetricsRecorder(
    (message) => {
      if (rest === undefined) post(message)
      else rest.push(...message.deltas)
    },
    { flushIntervalMs: METRICS_FLUSH_MS },
  )
  return {
    recorder,
    takeRest: () => {
      rest = []
      recorder.close()
      return rest
    },
  }
}

async function runTask<N extends ThreadTaskName>(envelope: ThreadTaskEnvelope<N>): Promise<ThreadResult<ThreadTaskOutput<N>>> {
  const { port } = envelope
  const post = poster<N>(port)
  const controller = new AbortController()
  const onMessage = (message: unknown): void => {
    if (isMainToThreadMessage(message) && !controller.signal.aborted) controller.abort(new CancelledError(message.reason))
  }
  // a cancel posted before the task reached this thread is already queued: handle it before the task
  // starts (a listener would only see it on a later tick, once a task that ignores its signal runs)
  for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) onMessage(m.message)
  port.on('message', onMessage)
  const { recorder, takeRest } = metricsRecorder(post)
  const ctx: ThreadTaskContext<ThreadTaskProgress<N>> = {
    signal: controller.signal,
    throwIfCancelled: () => {
      if (controller.signal.aborted) throw controller.signal.reason as Error
    },
    progress: (progress) => post({ type: 'progress', progress }),
    counter: (metric, labels, value = 1) => recorder.inc(metric, labels, value),
    observe: (metric, labels, value) => recorder.observe(metric, labels, value),
    gauge: (metric, labels, delta) => recorder.gaugeAdd(metric, labels, delta),
    threadId,
  }
  post({ type: 'started', threadId })
  let outcome: ThreadOutcome<ThreadTaskOutput<N>>
  try {
    const task = threadTasks[envelope.taskName]
    ctx.throwIfCancelled()
    outcome = { ok: true, output: await task(envelope.input, ctx) }
  } catch (error) {
    outcome = { ok: false, error: serializeError(error) }
  }
  const deltas = takeRest()
  port.close()
  return { outcome, deltas }
}

export default async function runThreadTask(envelope: unknown): Promise<ThreadResult<unknown>> {
  if (!isThreadTaskEnvelope(envelope, isThreadTaskName)) {
    const name = typeof envelope === 'object' && envelope !== null && 'taskName' in envelope ? envelope.taskName : undefined
    throw new BackupProxyError('E_INTERNAL', `not a thread task envelope, or unknown thread task ${JSON.stringify(name)}; known: ${Object.keys(threadTasks).join(', ')} (register it in src/workers/thread-tasks.ts)`)
  }
  running++
  try {
    return await runTask(envelope)
  } finally {
    running--
    releases.taskEnded()
  }
}

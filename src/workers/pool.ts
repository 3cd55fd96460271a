/**
 * The stream pool: a Piscina thread pool where each task is one disk stream.
 *
 * `pool.run(taskName, input, { signal, onProgress, onMetrics })` dispatches to the thread task registry
 * (thread-tasks.ts) through thread-entry. Each task gets its own MessageChannel: progress and metric deltas
 * come back on it, and an abort of `signal` is sent over it as a cooperative `cancel` — Piscina's own abort
 * is never used because it terminates the thread without letting the stream clean up. The outcome and the
 * last metric deltas come back as Piscina's result, after the port's pending messages are handled.
 *
 * The pool runs up to `threads` streams at once (`workers.threads`), on at most one thread per CPU core:
 * beyond that, a thread runs several streams (streamLayout). Threads start on demand: an idle pool has
 * no thread (a thread costs its isolate plus the task modules it loads, ~10-20 MiB of RSS once it has
 * streamed); the first task starts one (a few hundred ms of module loading, once per burst), and tasks
 * go to idle or new threads before any thread takes a second one; a thread idle for `idleTimeoutMs` is
 * retired. So a proxy waiting for jobs holds no thread, and a run's consecutive disks reuse warm threads.
 * `resize(n)` swaps in a new Piscina of the new size for new tasks and closes the old one once its
 * running tasks finish, so a live proxy can change its stream count without dropping streams. The entry runs compiled (dist/*.js) or from sources under tsx (src/*.ts: threads get
 * `--import tsx`).
 */
import { availableParallelism } from 'node:os'
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads'
import { Piscina } from 'piscina'
import { BackupProxyError, CancelledError, deserializeError } from '../common/errors.js'
import { silentLogger, type Logger } from '../common/log.js'
import { isThreadResult, isThreadToMainMessage, type MainToThreadMessage, type MetricDelta, type ThreadTaskEnvelope } from './messages.js'
import { releaseThreads } from './thread-release.js'
import type { ThreadTaskInput, ThreadTaskName, ThreadTaskOutput, ThreadTaskProgress } from './thread-tasks.js'

interface StreamPoolOptions {
  /** at most this many streams at once, on up to one thread per core (streamLayout) */
  threads: number
  /** CPU cores the streams are laid out for (default: os.availableParallelism()) */
  cores?: number
  /** a thread idle this long is retired (default THREAD_IDLE_TIMEOUT_MS) */
  idleTimeoutMs?: number
  logger?: Logger
  /** receives every metric delta of every task (the metrics registry plugs in here) */
  onMetrics?: (deltas: MetricDelta[]) => void
}

interface PoolRunOptions<N extends ThreadTaskName = ThreadTaskName> {
  signal?: AbortSignal
  /** the task's progress, of the type its thread task posts (thread-tasks.ts) */
  onProgress?: (progress: ThreadTaskProgress<N>) => void
  onMetrics?: (deltas: MetricDelta[]) => void
}

export interface PoolStats {
  /** the most streams the pool runs at once (`workers.threads`) */
  threads: number
  /** threads alive now (started on demand, retired when idle; several streams each beyond one per core) */
  started: number
  /** tasks (streams) running in a thread */
  busy: number
  /** tasks waiting for a free thread */
  queued: number
}

/** How long closing threads may take to release their remotes (an SMB logoff, an NFS unmount) once idle. */
const THREAD_RELEASE_MS = 5_000

const fromSources = import.meta.url.endsWith('.ts')
const ENTRY = new URL(`./thread-entry.${fromSources ? 'ts' : 'js'}`, import.meta.url).href
const EXEC_ARGV = fromSources ? ['--import', 'tsx'] : []

/**
 * How long an idle thread stays up: longer than the gap between two disks of a run, short enough to give
 * memory back between runs, and longer than a thread's cached remotes stay open when idle (30 s,
 * remotes/cache.ts): Piscina retires a thread without running its code, so its remotes must have closed
 * (NFS unmount, SMB logoff) by then.
 */
const THREAD_IDLE_TIMEOUT_MS = 60_000

/**
 * How `streams` disk streams are laid out on threads: as many threads as the CPU cores (no fewer, when
 * there are that many streams), each running the same number of streams. A stream thread beyond the
 * core count adds no CPU, only an isolate, its modules and its native memory (~10 MiB of RSS each; bench
 * backup-rss, 4 streams on 2 cores, alternated runs: 4 threads peaked at 187–205 MiB, 2 threads of 2
 * streams at 166–180, same MiB/s, less CPU): a stream spends its time in the kernel (socket reads, file
 * writes) and in awaits, little on its thread.
 * The streams divide evenly among the threads, so the pool runs exactly `streams` at once: 4 streams
 * on 2 cores = 2 threads × 2, 6 = 2 × 3, but 3 or 5 (no divisor ≥ 2 that leaves ≥ 2 threads) = 1 each.
 */
export function streamLayout(streams: number, cores: number): { threads: number; streamsPerThread: number } {
  let streamsPerThread = 1
  for (let d = 2; streams / d >= cores; d++) if (streams % d === 0) streamsPerThread = d
  return { threads: streams / streamsPerThread, streamsPerThread }
}

type LoadBalancer = NonNullable<NonNullable<ConstructorParameters<typeof Piscina>[0]>['loadBalancer']>

/**
 * Spreads tasks over the threads before doubling up: an idle thread first; while the pool has fewer
 * threads than its maximum, none (Piscina then starts a thread for the task); else the least busy with
 * room. Piscina's default balancer gives a task to a busy thread with room rather than start one, so two
 * disks would share a thread while a core idles.
 */
function spreadingBalancer(streamsPerThread: number, maxThreads: number, liveThreads: () => number): LoadBalancer {
  return (_task, workers) => {
    let candidate: (typeof workers)[number] | null = null
    for (const worker of workers) {
      if (worker.currentUsage === 0) return worker
      if (worker.currentUsage < streamsPerThread && (candidate === null || worker.currentUsage < candidate.currentUsage)) candidate = worker
    }
    return liveThreads() < maxThreads ? null : candidate
  }
}

function createPiscina(streams: number, cores: number, idleTimeoutMs: number): Piscina {
  const { threads, streamsPerThread } = streamLayout(streams, cores)
  // the balancer reads the pool's thread count (never during construction: no task yet)
  const piscina: Piscina = new Piscina({
    filename: ENTRY,
    minThreads: 0,
    maxThreads: threads,
    concurrentTasksPerWorker: streamsPerThread,
    loadBalancer: spreadingBalancer(streamsPerThread, threads, () => piscina.threads.length),
    idleTimeout: idleTimeoutMs,
    execArgv: EXEC_ARGV,
    // a stream task never blocks its thread for long: no need for Atomics.wait between tasks
    atomics: 'disabled',
    // a small young generation (1 MiB semi-spaces): a disk stream allocates little per block (block
    // buffers are pooled), yet under its steady allocation V8 grows each thread's semi-spaces towards
    // 16 MiB — RSS for no speed (bench backup-rss, 2 VMs × 2 disks: peak 301 -> ~250 MiB, same MiB/s;
    // 2 -> 1 MiB semi-spaces: 2 MiB less per thread)
    resourceLimits: { maxYoungGenerationSizeMb: 3 },
  })
  return piscina
}

export class StreamPool {
  #piscina: Piscina
  /**
   * Tasks handed to each Piscina and not settled yet. Piscina's close() waits for the tasks its threads
   * run, not for those still queued for a thread that is starting (threads start on demand): it would
   * fail them with "Terminating worker thread". A resize closes the old Piscina once these settled.
   */
  readonly #handed = new WeakMap<Piscina, Set<Promise<unknown>>>()
  #threads: number
  readonly #idleTimeoutMs: number
  readonly #cores: number
  #busy = 0
  #queued = 0
  #closing: Promise<void> | undefined
  readonly #retiring = new Set<Promise<void>>()
  readonly #cancels = new Set<(reason: string) => void>()
  /** rejects a running task at once (the forceful step: its thread is being terminated) */
  readonly #kills = new Set<(reason: string) => void>()
  readonly #logger: Logger
  readonly #onMetrics: ((deltas: MetricDelta[]) => void) | undefined
  /** resolved when no task is queued or running (close() waits for it before releasing the threads) */
  readonly #drainWaiters: (() => void)[] = []
  #destroyed = false
  /** threads that ran a task (only they can hold remotes to release) */
  readonly #usedThreads = new Set<number>()

  constructor(options: StreamPoolOptions) {
    if (!Number.isInteger(options.threads) || options.threads < 1 || options.threads > 64) {
      throw new BackupProxyError('E_USAGE', `threads must be a whole number from 1 to 64, got ${options.threads}`)
    }
    const idleTimeoutMs = options.idleTimeoutMs ?? THREAD_IDLE_TIMEOUT_MS
    if (!Number.isInteger(idleTimeoutMs) || idleTimeoutMs < 1) throw new BackupProxyError('E_USAGE', `idleTimeoutMs must be a whole number of milliseconds, at least 1, got ${idleTimeoutMs}`)
    this.#threads = options.threads
    this.#idleTimeoutMs = idleTimeoutMs
    this.#cores = options.cores ?? availableParallelism()
    this.#logger = options.logger ?? silentLogger
    this.#piscina = this.#watch(createPiscina(options.threads, this.#cores, idleTimeoutMs))
    this.#onMetrics = options.onMetrics
  }

  /**
   * Piscina reports on its instance what no task's promise carries (a close that timed out because a
   * task ignored its cancel and was then destroyed, a thread's uncaught error): logged, never an
   * unhandled 'error' event that would end the process.
   */
  #watch(piscina: Piscina): Piscina {
    piscina.on('error', (error: unknown) => this.#logger.warn({ err: error }, 'stream thread pool error'))
    return piscina
  }

  get stats(): PoolStats {
    return { threads: this.#threads, started: this.#piscina.threads.length, busy: this.#busy, queued: this.#queued }
  }

  /** Runs one stream task in a thread; rejects with the task's error (rebuilt) or E_CANCELLED. */
  async run<N extends ThreadTaskName>(taskName: N, input: ThreadTaskInput<N>, options: PoolRunOptions<N> = {}): Promise<ThreadTaskOutput<N>> {
    if (this.#closing !== undefined) throw new BackupProxyError('E_CANCELLED', 'the stream pool is shutting down; the task was not started')
    options.signal?.throwIfAborted()
    const { port1, port2 } = new MessageChannel()
    const envelope: ThreadTaskEnvelope<N> = { taskName, input, port: port2 }
    const piscina = this.#piscina
    this.#queued++
    let started = false
    return new Promise<ThreadTaskOutput<N>>((resolve, reject) => {
      let settled = false
      const finish = (fn: () => void) => {
        if (settled) return
        settled = true
        if (started) this.#busy--
        else this.#queued--
        if (this.#busy + this.#queued === 0) for (const resolve of this.#drainWaiters.splice(0)) resolve()
        options.signal?.removeEventListener('abort', onAbort)
        this.#cancels.delete(cancel)
        this.#kills.delete(kill)
        port1.close()
        fn()
      }
      const cancel = (reason: string) => {
        const message: MainToThreadMessage = { type: 'cancel', reason }
        port1.postMessage(message)
        // not started yet: the thread will see the cancel first thing when it starts; don't wait for it
        if (!started) finish(() => reject(new CancelledError(reason)))
      }
      const onAbort = () => {
        const r: unknown = options.signal?.reason
        cancel(r instanceof Error ? r.message : typeof r === 'string' ? r : 'cancelled')
      }
      const kill = (reason: string) => finish(() => reject(new CancelledError(`${reason} (its thread was terminated)`)))
      this.#cancels.add(cancel)
      this.#kills.add(kill)
      options.signal?.addEventListener('abort', onAbort, { once: true })
      const onMessage = (message: unknown) => {
        if (!isThreadToMainMessage(message, taskName)) return
        switch (message.type) {
          case 'started':
            this.#usedThreads.add(message.threadId)
            if (!started && !settled) {
              started = true
              this.#queued--
              this.#busy++
            }
            break
          case 'progress':
            options.onProgress?.(message.progress)
            break
          case 'metrics':
            this.#metrics(message.deltas, options)
            break
        }
      }
      port1.on('message', onMessage)
      const handed = this.#handed.get(piscina) ?? new Set<Promise<unknown>>()
      this.#handed.set(piscina, handed)
      const ran: Promise<unknown> = piscina.run(envelope, { transferList: [port2] })
      handed.add(ran)
      void ran.then(() => handed.delete(ran), () => handed.delete(ran))
      ran.then(
        (result: unknown) => {
          if (settled) return
          // every message the task posted is queued on port1 by now: handle them before the outcome
          for (let m = receiveMessageOnPort(port1); m !== undefined; m = receiveMessageOnPort(port1)) onMessage(m.message)
          if (!isThreadResult(result, taskName)) {
            return finish(() => reject(new BackupProxyError('E_INTERNAL', `thread task ${taskName} returned no outcome`)))
          }
          if (result.deltas.length > 0) this.#metrics(result.deltas, options)
          const { outcome } = result
          finish(() => (outcome.ok ? resolve(outcome.output) : reject(deserializeError(outcome.error))))
        },
        (error: unknown) => finish(() => reject(new BackupProxyError('E_INTERNAL', `thread running ${taskName} failed: ${(error as Error).message}`, { cause: error }))),
      )
    })
  }

  #metrics(deltas: MetricDelta[], options: { onMetrics?: (deltas: MetricDelta[]) => void }): void {
    options.onMetrics?.(deltas)
    this.#onMetrics?.(deltas)
  }

  /** Changes the thread count for new tasks; running tasks finish in their threads. */
  resize(threads: number): void {
    if (!Number.isInteger(threads) || threads < 1 || threads > 64) throw new BackupProxyError('E_USAGE', `threads must be a whole number from 1 to 64, got ${threads}`)
    if (threads === this.#threads || this.#closing !== undefined) return
    const old = this.#piscina
    this.#piscina = this.#watch(createPiscina(threads, this.#cores, this.#idleTimeoutMs))
    this.#logger.info({ from: this.#threads, to: threads }, 'stream pool resized')
    this.#threads = threads
    const retiring: Promise<void> = Promise.allSettled([...(this.#handed.get(old) ?? [])])
      .then(() => old.close())
      .catch((error: unknown) => this.#logger.warn({ err: error }, 'closing the previous thread pool failed'))
    this.#retiring.add(retiring)
    void retiring.finally(() => this.#retiring.delete(retiring))
  }

  /** Asks every running task to stop (cooperatively); they reject with E_CANCELLED once cleaned up. */
  cancelAll(reason: string): void {
    for (const cancel of [...this.#cancels]) cancel(reason)
  }

  /**
   * Lets running tasks finish, has the threads release what they hold (their opened remotes:
   * thread-release.ts), then stops the threads.
   */
  async close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#busy + this.#queued > 0) await new Promise<void>((resolve) => this.#drainWaiters.push(resolve))
      await this.#releaseThreads()
      if (this.#destroyed) return
      await Promise.all([this.#piscina.close(), ...this.#retiring])
    })()
    return this.#closing
  }

  /** Asks the current threads to release what they hold; a thread that does not answer in time is stopped anyway. */
  async #releaseThreads(): Promise<void> {
    const ids = this.#piscina.threads.map((t) => t.threadId).filter((id) => this.#usedThreads.has(id))
    const answered = await releaseThreads(ids, THREAD_RELEASE_MS)
    if (answered.length < ids.length) this.#logger.warn({ threads: ids.length, released: answered.length }, 'stream threads did not release their remotes in time: stopping them anyway')
  }

  /**
   * The last steps of the close → destroy ladder: cancels running tasks cooperatively and waits up to
   * `graceMs` for them to clean up and the threads to stop; then terminates the threads (a task that
   * ignores its signal cannot block shutdown), and every task still running rejects with E_CANCELLED.
   */
  async destroy(reason = 'the stream pool is being destroyed', options: { graceMs?: number } = {}): Promise<void> {
    const graceMs = options.graceMs ?? 10_000
    this.cancelAll(reason)
    const closed = this.close()
    let timer: NodeJS.Timeout | undefined
    const graceOver = new Promise<'grace over'>((resolve) => {
      timer = setTimeout(() => resolve('grace over'), graceMs)
    })
    const outcome = await Promise.race([closed.then(() => 'closed' as const), graceOver])
    clearTimeout(timer)
    if (outcome === 'closed') return
    this.#logger.warn({ graceMs, running: this.#busy, queued: this.#queued }, 'stream tasks ignored the cancel: terminating their threads')
    this.#destroyed = true
    for (const kill of [...this.#kills]) kill(reason)
    // the idle threads release their remotes first; a thread stuck in its task cannot, and is terminated
    const destroyed = this.#releaseThreads()
      .then(() => Promise.all([this.#piscina.destroy(), ...this.#retiring]))
      .then(() => undefined)
    this.#closing = destroyed // a later close() waits for this, not for the threads that were terminated
    await destroyed
  }
}

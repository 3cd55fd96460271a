/**
 * The backup runs started through the API, as XO sees them: each is one XO task (id = its root task id)
 * following one queue job wherever it runs (this proxy or another of the pool). A follower per run reads
 * the job's task log (the past from the job log, the rest live through the queue's events), translates it
 * (xo-log.ts) and keeps every XO event, so that:
 *   - `backup.run` with `streamLogs` streams them (replayed from the start, then live) — a client that
 *     goes away stops its stream, never the run or its follower;
 *   - `task.getAll` / `task.get` answer the consolidated tree, `task.cancel` cancels the queue job,
 *     `task.destroy` forgets a finished run;
 *   - `event.from` answers XO-style change events (`{class:'Task', operation, snapshot}`) after a token.
 * The registry lives in memory: a restarted API forgets the runs it followed (the jobs themselves run on
 * in the queue). Finished runs beyond `maxFinished` are forgotten, oldest first.
 */
import type { JsonValue } from '../common/errors.js'
import { serializeError } from '../common/errors.js'
import type { Logger } from '../common/log.js'
import type { JobHandle, CancelOutcome } from '../queue/client.js'
import type { JobSummary, TaskLogEvent } from '../queue/task-log.js'
import { XoLogTranslator, XoTaskTree, type XoTask, type XoTaskEvent } from './xo-log.js'

interface RunRecord {
  /** XO task id of the run (its root) */
  readonly id: string
  /** XO backup job id */
  readonly jobId: string
  readonly handle: JobHandle
  readonly events: XoTaskEvent[]
  readonly tree: XoTaskTree
  done: boolean
  /** resolves with the root's end event */
  readonly finished: Promise<Extract<XoTaskEvent, { type: 'end' }>>
}

interface TaskChange {
  class: 'Task'
  operation: 'add' | 'mod' | 'del'
  snapshot: XoTask | { id: string }
}

const MAX_CHANGES = 1000

export class RunRegistry {
  readonly #runs = new Map<string, RunRecord & { wake: Set<() => void> }>()
  readonly #changes: { seq: number; id: string; operation: 'add' | 'mod' | 'del' }[] = []
  readonly #changeWaiters = new Set<() => void>()
  readonly #followers = new Set<Promise<void>>()
  readonly #stop = new AbortController()
  #seq = 0

  constructor(
    readonly logger: Logger,
    readonly maxFinished = 100,
  ) {}

  /**
   * Starts following a queue job as a new XO run; the root start is its first event. `successResult`
   * turns the job's result into the one XO reads from the root's end (xo-server's forwardResult), e.g.
   * a restore's `{ size, id }`.
   */
  start(handle: JobHandle, rootId: string, jobId: string, rootProperties: Record<string, JsonValue>, successResult?: (result: JsonValue | undefined) => JsonValue): RunRecord {
    let resolveEnd!: (e: Extract<XoTaskEvent, { type: 'end' }>) => void
    const finished = new Promise<Extract<XoTaskEvent, { type: 'end' }>>((resolve) => (resolveEnd = resolve))
    const rec = { id: rootId, jobId, handle, events: [], tree: new XoTaskTree(), done: false, finished, wake: new Set<() => void>(), successResult }
    this.#runs.set(rootId, rec)
    this.#push(rec, [{ type: 'start', id: rootId, timestamp: Date.now(), properties: rootProperties }])
    const follower = this.#follow(rec, resolveEnd).catch((error: unknown) => this.logger.error({ err: error, run: rootId }, 'API: following a run failed'))
    this.#followers.add(follower)
    void follower.finally(() => this.#followers.delete(follower))
    return rec
  }

  #push(rec: RunRecord & { wake: Set<() => void> }, events: readonly XoTaskEvent[]): void {
    if (events.length === 0) return
    for (const e of events) {
      rec.events.push(e)
      rec.tree.apply(e)
    }
    this.#change(rec.id, events[0]?.type === 'start' && events[0].id === rec.id ? 'add' : 'mod')
    for (const w of rec.wake) w()
  }

  #change(id: string, operation: 'add' | 'mod' | 'del'): void {
    this.#changes.push({ seq: ++this.#seq, id, operation })
    if (this.#changes.length > MAX_CHANGES) this.#changes.splice(0, this.#changes.length - MAX_CHANGES)
    for (const w of this.#changeWaiters) w()
  }

  async #follow(rec: RunRecord & { wake: Set<() => void>; successResult?: ((result: JsonValue | undefined) => JsonValue) | undefined }, resolveEnd: (e: Extract<XoTaskEvent, { type: 'end' }>) => void): Promise<void> {
    const translator = new XoLogTranslator(rec.id)
    const buffer: TaskLogEvent[] = []
    let wake: (() => void) | undefined
    const stopListening = rec.handle.onTaskLog((e) => {
      buffer.push(e)
      wake?.()
    })
    let summary: JobSummary | undefined
    let failure: unknown
    let settled = false
    try {
      await rec.handle.ready()
      for (const e of await rec.handle.taskLog()) this.#push(rec, translator.translate(e))
      void rec.handle
        .result(this.#stop.signal)
        .then((s) => (summary = s), (error: unknown) => (failure = error))
        .finally(() => {
          settled = true
          wake?.()
        })
      for (;;) {
        while (buffer.length > 0) this.#push(rec, translator.translate(buffer.shift()!))
        if (settled) break
        await new Promise<void>((resolve) => {
          wake = resolve
          if (buffer.length > 0 || settled) resolve()
        })
        wake = undefined
      }
      // events that reached the job log but not our listener (a short attempt, a reconnect)
      if (summary !== undefined) for (const e of await rec.handle.taskLog()) this.#push(rec, translator.translate(e))
    } catch (error) {
      failure ??= error
    } finally {
      stopListening()
      rec.handle.stop()
    }
    const end: Extract<XoTaskEvent, { type: 'end' }> =
      summary !== undefined
        ? (translator.rootEnd(summary) as Extract<XoTaskEvent, { type: 'end' }>)
        : { type: 'end', id: rec.id, timestamp: Date.now(), status: 'interrupted', result: { ...serializeError(failure), stack: undefined } as unknown as JsonValue }
    if (end.status === 'success' && rec.successResult !== undefined) end.result = rec.successResult(end.result)
    this.#push(rec, [end])
    rec.done = true
    for (const w of rec.wake) w()
    resolveEnd(end)
    this.#forgetOldFinished()
  }

  #forgetOldFinished(): void {
    const finished = [...this.#runs.values()].filter((r) => r.done)
    for (const r of finished.slice(0, Math.max(0, finished.length - this.maxFinished))) this.destroy(r.id)
  }

  /** The run's XO events from the first, then live until its end or `signal`. */
  async *stream(rec: RunRecord, signal: AbortSignal): AsyncGenerator<XoTaskEvent> {
    const r = this.#runs.get(rec.id) ?? (rec as RunRecord & { wake: Set<() => void> })
    let i = 0
    let wake: (() => void) | undefined
    const onWake = () => wake?.()
    r.wake.add(onWake)
    signal.addEventListener('abort', onWake)
    try {
      for (;;) {
        while (i < r.events.length) yield r.events[i++]!
        if (r.done || signal.aborted) return
        await new Promise<void>((resolve) => {
          wake = resolve
          if (i < r.events.length || r.done || signal.aborted) resolve()
        })
      }
    } finally {
      r.wake.delete(onWake)
      signal.removeEventListener('abort', onWake)
    }
  }

  get(id: string): RunRecord | undefined {
    return this.#runs.get(id)
  }

  all(): RunRecord[] {
    return [...this.#runs.values()]
  }

  /** XO job ids of the runs this API follows that have not ended. */
  runningJobIds(): string[] {
    return [...new Set([...this.#runs.values()].filter((r) => !r.done).map((r) => r.jobId))]
  }

  cancel(id: string): Promise<CancelOutcome> | undefined {
    return this.#runs.get(id)?.handle.cancel('cancelled from Xen Orchestra (task.cancel)')
  }

  /** Forgets a finished run; false when it is unknown, throws nothing. */
  destroy(id: string): boolean {
    if (!this.#runs.delete(id)) return false
    this.#change(id, 'del')
    return true
  }

  /** XO's event.from: changes after `token` ('' = every task as added), waiting up to `timeoutMs` for one. */
  async changesSince(token: string, timeoutMs: number, signal: AbortSignal): Promise<{ events: TaskChange[]; token: string }> {
    const from = /^\d+$/.test(token) ? Number(token) : undefined
    const oldest = this.#changes[0]?.seq ?? this.#seq + 1
    if (from === undefined || from + 1 < oldest) {
      return { events: this.all().map((r) => ({ class: 'Task', operation: 'add', snapshot: r.tree.snapshot() ?? { id: r.id } })), token: String(this.#seq) }
    }
    if (from >= this.#seq && timeoutMs > 0 && !signal.aborted) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer)
          this.#changeWaiters.delete(done)
          signal.removeEventListener('abort', done)
          resolve()
        }
        const timer = setTimeout(done, timeoutMs)
        this.#changeWaiters.add(done)
        signal.addEventListener('abort', done, { once: true })
      })
    }
    const latest = new Map<string, 'add' | 'mod' | 'del'>()
    for (const c of this.#changes) {
      if (c.seq <= from) continue
      const before = latest.get(c.id)
      latest.set(c.id, c.operation === 'del' ? 'del' : before === 'add' ? 'add' : c.operation)
    }
    const events: TaskChange[] = [...latest].map(([id, operation]) => {
      const snapshot = operation === 'del' ? undefined : this.#runs.get(id)?.tree.snapshot()
      return { class: 'Task', operation: snapshot === undefined ? 'del' : operation, snapshot: snapshot ?? { id } }
    })
    return { events, token: String(this.#seq) }
  }

  /** Stops following (runs go on in the queue); waits for the followers to end. */
  async close(): Promise<void> {
    this.#stop.abort()
    for (const w of this.#changeWaiters) w()
    await Promise.allSettled([...this.#followers])
  }
}

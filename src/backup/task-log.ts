/**
 * The task log of a backup run, in Xen Orchestra's shape: a tree of tasks, each reported as events
 * (`start` / `info` / `warning` / `end`) carrying `taskId`, `parentId`, `timestamp`, and on `end` a
 * `status` (success | failure | interrupted | skipped) and a `result`. Events are streamed as they
 * happen (to job logs / QueueEvents through the `emit` callback) and the whole tree is returned as the
 * job's value (`summary()`).
 *
 * Status truth: a task that ends without an explicit status takes the worst of its children
 * (failure > interrupted > success; all-skipped → skipped), so a run with one failed VM is a failure and
 * never reads as a success. `run()` wraps an async function: its value is the result, a thrown error
 * ends the task with `failure` (or `interrupted` for a cancel) and the error serialized as the result.
 */
import { randomUUID } from 'node:crypto'
import { CancelledError, serializeError, type JsonValue } from '../common/errors.js'
import type { TaskLogEntry, TaskLogEvent, TaskSummary, TaskStatus as QueueTaskStatus } from '../queue/task-log.js'

// the task log's types are the queue's (the contract both sides share): one status, event and summary shape
export type { TaskLogEvent, TaskSummary } from '../queue/task-log.js'
/** A task's status while it runs: pending, then one of the queue's final statuses. */
export type TaskStatus = TaskSummary['status']
export type FinalStatus = QueueTaskStatus

const RANK: Record<TaskStatus, number> = { pending: 0, skipped: 0, success: 1, interrupted: 2, failure: 3 }

export class Task {
  readonly id: string
  readonly #node: TaskSummary
  readonly #children: Task[] = []
  readonly #emit: (e: TaskLogEvent) => void
  readonly #now: () => number

  /** an attached root: its start and end are emitted by its owner (the job runner), not by us */
  readonly #attached: boolean

  constructor(message: string, data: JsonValue | undefined, parent: Task | undefined, emit: (e: TaskLogEvent) => void, now: () => number, attachedId?: string) {
    this.id = attachedId ?? randomUUID()
    this.#attached = attachedId !== undefined
    this.#emit = emit
    this.#now = now
    this.#node = { id: this.id, message, start: now(), status: 'pending', ...(data === undefined ? {} : { data }) }
    if (parent !== undefined) parent.#children.push(this)
    if (!this.#attached) emit({ event: 'start', taskId: this.id, ...(parent === undefined ? {} : { parentId: parent.id }), timestamp: this.#node.start, message, ...(data === undefined ? {} : { data }) })
  }

  get status(): TaskStatus {
    return this.#node.status
  }

  child(message: string, data?: JsonValue): Task {
    return new Task(message, data, this, this.#emit, this.#now)
  }

  info(message: string, data?: JsonValue): void {
    this.#log('info', message, data)
  }

  warning(message: string, data?: JsonValue): void {
    this.#log('warning', message, data)
  }

  #log(kind: 'info' | 'warning', message: string, data: JsonValue | undefined): void {
    const timestamp = this.#now()
    const entry: TaskLogEntry = { message, timestamp, ...(data === undefined ? {} : { data }) }
    const list = kind === 'info' ? (this.#node.infos ??= []) : (this.#node.warnings ??= [])
    list.push(entry)
    this.#emit({ event: kind, taskId: this.id, timestamp, message, ...(data === undefined ? {} : { data }) })
  }

  /** Status the children imply: the worst one; skipped only when every child was skipped. */
  derivedStatus(): FinalStatus {
    if (this.#children.length === 0) return 'success'
    if (this.#children.every((c) => c.status === 'skipped')) return 'skipped'
    let worst: FinalStatus = 'success'
    for (const c of this.#children) {
      const s = c.status === 'pending' ? 'interrupted' : c.status
      if (RANK[s] > RANK[worst]) worst = s
    }
    return worst
  }

  /** Ends the task (idempotent: a second end is ignored). Without a status, the children decide. */
  end(status?: FinalStatus, result?: JsonValue): void {
    if (this.#node.status !== 'pending') return
    for (const c of this.#children) if (c.status === 'pending') c.end('interrupted')
    const final = status ?? this.derivedStatus()
    this.#node.status = final
    this.#node.end = this.#now()
    if (result !== undefined) this.#node.result = result
    if (!this.#attached) this.#emit({ event: 'end', taskId: this.id, timestamp: this.#node.end, status: final, ...(result === undefined ? {} : { result }) })
  }

  fail(error: unknown): void {
    this.end(error instanceof CancelledError || (error as { code?: unknown } | null)?.code === 'E_TIMEOUT' ? 'interrupted' : 'failure', serializeError(error) as unknown as JsonValue)
  }

  /** Runs fn as this task: success with its (JSON) result, or failure with the error, which is rethrown. */
  async run<T>(fn: (task: Task) => Promise<T>, toResult?: (value: T) => JsonValue | undefined): Promise<T> {
    try {
      const value = await fn(this)
      const result = toResult?.(value)
      // a task whose children failed is not a success even when fn returned
      const derived = this.derivedStatus()
      this.end(derived === 'skipped' ? 'success' : derived, result)
      return value
    } catch (error) {
      this.fail(error)
      throw error
    }
  }

  summary(): TaskSummary {
    const out: TaskSummary = { ...this.#node }
    if (this.#children.length > 0) out.tasks = this.#children.map((c) => c.summary())
    return out
  }
}

/** Creates the root task of a log; `emit` receives every event as it happens. */
export function createTaskLog(message: string, data: JsonValue | undefined, emit: (e: TaskLogEvent) => void = () => {}, now: () => number = Date.now): Task {
  return new Task(message, data, undefined, emit, now)
}

/**
 * A root for a task that already exists in someone else's log (the job runner's root task `id`): children,
 * infos and warnings are emitted under that id; its start and end are left to the owner.
 */
export function attachTaskLog(id: string, message: string, emit: (e: TaskLogEvent) => void, now: () => number = Date.now): Task {
  return new Task(message, undefined, undefined, emit, now, id)
}

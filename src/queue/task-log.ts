/**
 * Task log in Xen Orchestra's shape: a run reports a tree of tasks through `start` / `info` / `warning` /
 * `end` events (`taskId`, `parentId`, `timestamp`, `status`, `result`), and the consolidated tree (XO's
 * "consolidated backup log": id, message, data, start, end, status, result, infos, warnings, tasks) is
 * the summary a job returns.
 *
 * Events travel as JSON lines in the BullMQ job log (durable, readable after the fact) and as `task-log`
 * custom events on the queue's event stream (live, through QueueEvents). `LogTask` is the one task-log
 * implementation: the job runner's root, the tasks processors add and the engine's runs (`backup/task-log.ts`
 * names it `Task`) all emit a well-formed tree with it; `consolidate()` rebuilds the tree from events.
 */
import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import { errorCode, serializeError, type JsonValue, type SerializedError } from '../common/errors.js'

export const TASK_STATUSES = ['success', 'failure', 'interrupted', 'skipped'] as const
export type TaskStatus = (typeof TASK_STATUSES)[number]

const jsonValue: z.ZodType<JsonValue> = z.lazy(() => z.union([z.string(), z.number(), z.boolean(), z.null(), z.array(jsonValue), z.record(z.string(), jsonValue)]))

export const taskLogEventSchema = z.discriminatedUnion('event', [
  z.object({ event: z.literal('start'), taskId: z.string(), parentId: z.string().optional(), timestamp: z.number(), message: z.string(), data: jsonValue.optional() }),
  z.object({ event: z.literal('info'), taskId: z.string(), timestamp: z.number(), message: z.string(), data: jsonValue.optional() }),
  z.object({ event: z.literal('warning'), taskId: z.string(), timestamp: z.number(), message: z.string(), data: jsonValue.optional() }),
  z.object({ event: z.literal('end'), taskId: z.string(), timestamp: z.number(), status: z.enum(TASK_STATUSES), result: jsonValue.optional() }),
])
export type TaskLogEvent = z.infer<typeof taskLogEventSchema>

/** What a processor returns: the root task's outcome. A thrown error becomes failure (or interrupted for E_CANCELLED). */
export interface TaskResult {
  status: TaskStatus
  result?: JsonValue
}

export interface TaskSummary {
  id: string
  message: string
  data?: JsonValue
  start: number
  end?: number
  status: TaskStatus | 'pending'
  result?: JsonValue
  infos?: TaskLogEntry[]
  warnings?: TaskLogEntry[]
  tasks?: TaskSummary[]
}

/** An info or warning of a task (the engine's Task records when it was logged). */
export interface TaskLogEntry {
  message: string
  data?: JsonValue
  timestamp?: number
}

/** The return value of every job: the consolidated root task plus where it ran. */
export interface JobSummary extends TaskSummary {
  jobId: string
  kind: string
  /** proxy instance that ran the last attempt */
  ranBy?: string
  /** the error of a failed or interrupted run, with its code (E_CANCELLED, E_TASK_INVALID, ...) */
  error?: SerializedError
  /**
   * Set when this attempt's events were not written to the job log and event stream because this tree
   * determines them exactly (`eventsOfTree`): a short attempt, done before its first flush.
   * `JobHandle.taskLog()` and `onTaskLog` listeners get them from here.
   */
  taskLogInSummary?: true
}

/** 40 random bits per process (per thread), and a counter: ids unique without drawing entropy per id. */
const ID_PREFIX = randomBytes(5).toString('hex')
let idSeq = 0

/** A task (and job) id: time in base 36, this process's random prefix, a counter (23 characters). */
export function newTaskId(): string {
  idSeq = (idSeq + 1) % 0x100000
  return `${Date.now().toString(36)}${ID_PREFIX}${idSeq.toString(16).padStart(5, '0')}`
}

const RANK: Record<TaskSummary['status'], number> = { pending: 0, skipped: 0, success: 1, interrupted: 2, failure: 3 }

interface LogTaskInit {
  message?: string
  data?: JsonValue | undefined
  /** when the task started (its start event's timestamp); default now() */
  start?: number
  now?: () => number
  /** false for an attached root: its end, like its start, is its owner's to emit */
  emitsEnd?: boolean
}

/**
 * One task of the log: emits a well-formed subtree (one start, any infos and warnings, exactly one end)
 * and keeps its node of the consolidated tree (`summary()`), which is also what its status derives from.
 *
 * Status truth: a task that ends without an explicit status takes the worst of its children
 * (failure > interrupted > success; all skipped → skipped), so a run with one failed VM is a failure and
 * never reads as a success; ending a task ends its pending children `interrupted`. `run()` wraps an
 * async function: its value is the result, a thrown error ends the task with `failure` (or
 * `interrupted` for a cancel or a timeout) and the error serialized as the result.
 *
 * The constructor emits nothing: it makes a task whose start its owner emitted (the job runner's root,
 * whose start carries the job's data). `createTaskLog` starts a root, `child()` a child, and
 * `attachTaskLog` reports under a task of someone else's log.
 */
export class LogTask {
  readonly id: string
  readonly #node: TaskSummary
  readonly #children: LogTask[] = []
  readonly #emit: (event: TaskLogEvent) => void
  readonly #now: () => number
  readonly #emitsEnd: boolean

  constructor(emit: (event: TaskLogEvent) => void, id: string, init: LogTaskInit = {}) {
    this.id = id
    this.#emit = emit
    this.#now = init.now ?? Date.now
    this.#emitsEnd = init.emitsEnd ?? true
    this.#node = { id, message: init.message ?? '', start: init.start ?? this.#now(), status: 'pending', ...(init.data === undefined ? {} : { data: init.data }) }
  }

  get status(): TaskSummary['status'] {
    return this.#node.status
  }

  get ended(): boolean {
    return this.#node.status !== 'pending'
  }

  /** Starts a child task. */
  child(message: string, data?: JsonValue): LogTask {
    const start = this.#now()
    const child = new LogTask(this.#emit, newTaskId(), { message, data, start, now: this.#now })
    this.#children.push(child)
    this.#emit({ event: 'start', taskId: child.id, parentId: this.id, timestamp: start, message, ...(data === undefined ? {} : { data }) })
    return child
  }

  info(message: string, data?: JsonValue): void {
    this.#log('info', message, data)
  }

  warning(message: string, data?: JsonValue): void {
    this.#log('warning', message, data)
  }

  #log(kind: 'info' | 'warning', message: string, data: JsonValue | undefined): void {
    const timestamp = this.#now()
    const list = kind === 'info' ? (this.#node.infos ??= []) : (this.#node.warnings ??= [])
    list.push({ message, timestamp, ...(data === undefined ? {} : { data }) })
    this.#emit({ event: kind, taskId: this.id, timestamp, message, ...(data === undefined ? {} : { data }) })
  }

  /** Status the children imply: the worst one; skipped only when every child was skipped. */
  derivedStatus(): TaskStatus {
    if (this.#children.length === 0) return 'success'
    if (this.#children.every((c) => c.status === 'skipped')) return 'skipped'
    let worst: TaskStatus = 'success'
    for (const c of this.#children) {
      const s = c.status === 'pending' ? 'interrupted' : c.status
      if (RANK[s] > RANK[worst]) worst = s
    }
    return worst
  }

  /** Ends the task; later calls are ignored (the first outcome wins). Without a status, the children decide. */
  end(status?: TaskStatus, result?: JsonValue): void {
    if (this.ended) return
    for (const c of this.#children) if (!c.ended) c.end('interrupted')
    const final = status ?? this.derivedStatus()
    this.#node.status = final
    this.#node.end = this.#now()
    if (result !== undefined) this.#node.result = result
    if (this.#emitsEnd) this.#emit({ event: 'end', taskId: this.id, timestamp: this.#node.end, status: final, ...(result === undefined ? {} : { result }) })
  }

  /** Ends the task with an error: interrupted for a cancel or a timeout, failure otherwise. */
  fail(error: unknown): void {
    const code = errorCode(error)
    this.end(code === 'E_CANCELLED' || code === 'E_TIMEOUT' ? 'interrupted' : 'failure', serializeError(error) as unknown as JsonValue)
  }

  /** Runs fn as this task: success with its (JSON) result, or failure with the error, which is rethrown. */
  async run<T>(fn: (task: LogTask) => Promise<T>, toResult?: (value: T) => JsonValue | undefined): Promise<T> {
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

  /** This task's node of the consolidated tree, children included (a copy). */
  summary(): TaskSummary {
    const out: TaskSummary = { ...this.#node }
    if (this.#children.length > 0) out.tasks = this.#children.map((c) => c.summary())
    return out
  }
}

/** Starts the root task of a log; `emit` receives every event as it happens. */
export function createTaskLog(message: string, data: JsonValue | undefined, emit: (e: TaskLogEvent) => void = () => {}, now: () => number = Date.now): LogTask {
  const id = newTaskId()
  const start = now()
  emit({ event: 'start', taskId: id, timestamp: start, message, ...(data === undefined ? {} : { data }) })
  return new LogTask(emit, id, { message, data, start, now })
}

/**
 * A root for a task that already exists in someone else's log (the job runner's root task `id`): children,
 * infos and warnings are emitted under that id; its start and end are left to the owner.
 */
export function attachTaskLog(id: string, message: string, emit: (e: TaskLogEvent) => void, now: () => number = Date.now): LogTask {
  return new LogTask(emit, id, { message, now, emitsEnd: false })
}

/** Rebuilds XO's consolidated tree from events; returns the roots (normally one). */
export function consolidate(events: readonly TaskLogEvent[]): TaskSummary[] {
  const byId = new Map<string, TaskSummary>()
  const roots: TaskSummary[] = []
  for (const e of events) {
    if (e.event === 'start') {
      const t: TaskSummary = { id: e.taskId, message: e.message, start: e.timestamp, status: 'pending', ...(e.data === undefined ? {} : { data: e.data }) }
      byId.set(e.taskId, t)
      const parent = e.parentId === undefined ? undefined : byId.get(e.parentId)
      if (parent === undefined) roots.push(t)
      else (parent.tasks ??= []).push(t)
      continue
    }
    const t = byId.get(e.taskId)
    if (t === undefined) continue
    if (e.event === 'end') {
      t.status = e.status
      t.end = e.timestamp
      if (e.result !== undefined) t.result = e.result
    } else {
      const entry = { message: e.message, ...(e.data === undefined ? {} : { data: e.data }) }
      if (e.event === 'info') (t.infos ??= []).push(entry)
      else (t.warnings ??= []).push(entry)
    }
  }
  return roots
}

/**
 * The events `consolidate` built `tree` from, when the tree alone determines them: each task's start
 * (before its children's) and end (after them). Undefined when the tree holds infos or warnings (their
 * timestamps are not in the tree). Key order matches what LogTask and the job runner emit, so the JSON
 * of these events can be compared with the lines that would have been written.
 */
export function eventsOfTree(tree: TaskSummary | ParsedTaskSummary, parentId?: string): TaskLogEvent[] | undefined {
  const out: TaskLogEvent[] = []
  return collectEvents(tree, parentId, out) ? out : undefined
}

function collectEvents(t: TaskSummary | ParsedTaskSummary, parentId: string | undefined, out: TaskLogEvent[]): boolean {
  if (t.infos !== undefined || t.warnings !== undefined) return false
  out.push({ event: 'start', taskId: t.id, ...(parentId === undefined ? {} : { parentId }), timestamp: t.start, message: t.message, ...(t.data === undefined ? {} : { data: t.data }) })
  for (const child of t.tasks ?? []) if (!collectEvents(child, t.id, out)) return false
  if (t.status === 'pending') return true
  if (t.end === undefined) return false
  out.push({ event: 'end', taskId: t.id, timestamp: t.end, status: t.status, ...(t.result === undefined ? {} : { result: t.result }) })
  return true
}

/** A TaskSummary as parsed (zod types optional fields `T | undefined`; eventsOfTree treats both alike). */
interface ParsedTaskSummary {
  id: string
  message: string
  data?: JsonValue | undefined
  start: number
  end?: number | undefined
  status: TaskStatus | 'pending'
  result?: JsonValue | undefined
  infos?: unknown[] | undefined
  warnings?: unknown[] | undefined
  tasks?: ParsedTaskSummary[] | undefined
}

const taskSummarySchema: z.ZodType<ParsedTaskSummary> = z.lazy(() =>
  z.object({
    id: z.string(),
    message: z.string(),
    data: jsonValue.optional(),
    start: z.number(),
    end: z.number().optional(),
    status: z.enum([...TASK_STATUSES, 'pending']),
    result: jsonValue.optional(),
    infos: z.array(z.unknown()).optional(),
    warnings: z.array(z.unknown()).optional(),
    tasks: z.array(taskSummarySchema).optional(),
  }),
)

/**
 * The events a job's return value carries instead of its job log (`taskLogInSummary`): none when it
 * is not such a summary.
 */
export function eventsInSummary(value: unknown): TaskLogEvent[] {
  if (typeof value !== 'object' || value === null || (value as { taskLogInSummary?: unknown }).taskLogInSummary !== true) return []
  const r = taskSummarySchema.safeParse(value)
  return r.success ? (eventsOfTree(r.data) ?? []) : []
}

/** Parses job log lines (JSON TaskLogEvents); other lines are skipped. */
export function parseTaskLogLines(lines: readonly string[]): TaskLogEvent[] {
  const out: TaskLogEvent[] = []
  for (const line of lines) {
    try {
      const r = taskLogEventSchema.safeParse(JSON.parse(line))
      if (r.success) out.push(r.data)
    } catch {
      // a line that is not JSON is a plain log line, not a task event: skip it
    }
  }
  return out
}

/** Log line prefix-free JSON the worker appends last: `{"summary": JobSummary}`. */
export function summaryFromLogLines(lines: readonly string[]): JobSummary | undefined {
  for (let i = lines.length - 1; i >= 0; i--) {
    try {
      const v = JSON.parse(lines[i]!) as { summary?: JobSummary }
      if (typeof v === 'object' && v !== null && v.summary !== undefined) return v.summary
    } catch {
      // not JSON: a plain log line
    }
  }
  return undefined
}

/**
 * Task log in Xen Orchestra's shape: a run reports a tree of tasks through `start` / `info` / `warning` /
 * `end` events (`taskId`, `parentId`, `timestamp`, `status`, `result`), and the consolidated tree (XO's
 * "consolidated backup log": id, message, data, start, end, status, result, infos, warnings, tasks) is
 * the summary a job returns.
 *
 * Events travel as JSON lines in the BullMQ job log (durable, readable after the fact) and as `task-log`
 * custom events on the queue's event stream (live, through QueueEvents). `LogTask` is the small helper
 * processors use to emit a well-formed tree; `consolidate()` rebuilds the tree from events.
 */
import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import type { JsonValue, SerializedError } from '../common/errors.js'

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

/** Emits a well-formed subtree: one start, any infos/warnings, exactly one end. */
export class LogTask {
  #ended = false

  constructor(
    private readonly emit: (event: TaskLogEvent) => void,
    readonly id: string,
  ) {}

  /** Starts a child task. */
  child(message: string, data?: JsonValue): LogTask {
    const id = newTaskId()
    this.emit({ event: 'start', taskId: id, parentId: this.id, timestamp: Date.now(), message, ...(data === undefined ? {} : { data }) })
    return new LogTask(this.emit, id)
  }

  info(message: string, data?: JsonValue): void {
    this.emit({ event: 'info', taskId: this.id, timestamp: Date.now(), message, ...(data === undefined ? {} : { data }) })
  }

  warning(message: string, data?: JsonValue): void {
    this.emit({ event: 'warning', taskId: this.id, timestamp: Date.now(), message, ...(data === undefined ? {} : { data }) })
  }

  /** Ends the task; later calls are ignored (the first outcome wins). */
  end(status: TaskStatus, result?: JsonValue): void {
    if (this.#ended) return
    this.#ended = true
    this.emit({ event: 'end', taskId: this.id, timestamp: Date.now(), status, ...(result === undefined ? {} : { result }) })
  }

  get ended(): boolean {
    return this.#ended
  }

  /** Runs `fn` as a child task: success with its value, failure with its error (rethrown). */
  async run<T extends JsonValue | void>(message: string, data: JsonValue | undefined, fn: (task: LogTask) => Promise<T>, toResult: (error: unknown) => JsonValue): Promise<T> {
    const task = this.child(message, data)
    try {
      const value = await fn(task)
      task.end('success', value === undefined ? undefined : (value))
      return value
    } catch (error) {
      task.end('failure', toResult(error))
      throw error
    }
  }
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

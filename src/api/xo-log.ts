/**
 * Our queue task log translated into the events xo-server consumes from a proxy's `backup.run`
 * (`@vates/task` progress events, consolidated on XO's side by `makeOnProgress`):
 *
 *   {type:'start', id, parentId?, timestamp, properties:{name, ...}}
 *   {type:'info'|'warning', id, timestamp, message, data}
 *   {type:'end', id, timestamp, status, result}
 *
 * One XO run is one root task (`properties.name: 'backup run'` plus XO's jobData, as XO's backup worker
 * starts it), whatever the number of queue attempts behind it: each attempt's root (a start without a
 * parent) is folded into that XO root — an info says which proxy runs the attempt, its children hang
 * under it, its infos and warnings go to it, and its end is dropped; the XO root ends once, with the job's final outcome. A task's `message` becomes
 * `properties.name` and its object `data` is spread into the properties (`{name:'backup VM', type:'VM',
 * id}` as XO's runners write them). `XoTaskTree` consolidates the same events into XO's task shape for
 * `task.getAll` / `task.get` / `event.from`.
 */
import type { JsonValue } from '../common/errors.js'
import type { JobSummary, TaskLogEvent } from '../queue/task-log.js'

type XoStatus = 'pending' | 'success' | 'failure' | 'interrupted' | 'skipped'

export type XoTaskEvent =
  | { type: 'start'; id: string; parentId?: string; timestamp: number; properties: Record<string, JsonValue> }
  | { type: 'info' | 'warning'; id: string; timestamp: number; message: string; data?: JsonValue }
  | { type: 'end'; id: string; timestamp: number; status: Exclude<XoStatus, 'pending'>; result?: JsonValue }

export interface XoTask {
  id: string
  properties: Record<string, JsonValue>
  start: number
  end?: number
  status: XoStatus
  result?: JsonValue
  infos?: { message: string; data?: JsonValue }[]
  warnings?: { message: string; data?: JsonValue }[]
  tasks?: XoTask[]
}

function propertiesOf(message: string, data: JsonValue | undefined): Record<string, JsonValue> {
  if (typeof data === 'object' && data !== null && !Array.isArray(data)) return { ...data, name: message }
  return data === undefined ? { name: message } : { name: message, data }
}

/** Translates one run's queue events (any number of attempts) into XO events under `rootId`. */
export class XoLogTranslator {
  readonly #attemptRoots = new Set<string>()
  readonly #seen = new Set<string>()

  constructor(readonly rootId: string) {}

  /** The XO events of one queue event (none for an attempt root's start or end, or a duplicate). */
  translate(e: TaskLogEvent): XoTaskEvent[] {
    const key = JSON.stringify(e)
    if (this.#seen.has(key)) return []
    this.#seen.add(key)
    if (e.event === 'start') {
      if (e.parentId === undefined) {
        this.#attemptRoots.add(e.taskId)
        // which proxy runs it: an info on the XO root (the attempt's own root is folded into it)
        const d = typeof e.data === 'object' && e.data !== null && !Array.isArray(e.data) ? e.data : {}
        const data = { proxy: d.proxy ?? null, attempt: d.attempt ?? null, queueJobId: d.jobId ?? null }
        return [{ type: 'info', id: this.rootId, timestamp: e.timestamp, message: `attempt ${JSON.stringify(data.attempt)} on proxy ${JSON.stringify(data.proxy)}`, data }]
      }
      const parentId = this.#attemptRoots.has(e.parentId) ? this.rootId : e.parentId
      return [{ type: 'start', id: e.taskId, parentId, timestamp: e.timestamp, properties: propertiesOf(e.message, e.data) }]
    }
    const id = this.#attemptRoots.has(e.taskId) ? this.rootId : e.taskId
    if (e.event === 'end') return id === this.rootId ? [] : [{ type: 'end', id, timestamp: e.timestamp, status: e.status, ...(e.result === undefined ? {} : { result: e.result }) }]
    return [{ type: e.event, id, timestamp: e.timestamp, message: e.message, ...(e.data === undefined ? {} : { data: e.data }) }]
  }

  /** The XO root's end from the job's final summary (a failure's result is its error, without stack). */
  rootEnd(summary: JobSummary): XoTaskEvent {
    const status = summary.status === 'pending' ? 'interrupted' : summary.status
    let result: JsonValue | undefined = summary.result
    if (summary.error !== undefined && status !== 'success') {
      const { stack: _stack, ...error } = summary.error
      result = error as unknown as JsonValue
    }
    return { type: 'end', id: this.rootId, timestamp: summary.end ?? Date.now(), status, ...(result === undefined ? {} : { result }) }
  }
}

/** XO's consolidated task tree of one run, built from its XO events (makeOnProgress's logic). */
export class XoTaskTree {
  readonly #byId = new Map<string, XoTask>()
  root: XoTask | undefined

  apply(e: XoTaskEvent): void {
    if (e.type === 'start') {
      const t: XoTask = { id: e.id, properties: e.properties, start: e.timestamp, status: 'pending' }
      this.#byId.set(e.id, t)
      const parent = e.parentId === undefined ? undefined : this.#byId.get(e.parentId)
      if (parent === undefined) this.root ??= t
      else (parent.tasks ??= []).push(t)
      return
    }
    const t = this.#byId.get(e.id)
    if (t === undefined) return
    if (e.type === 'end') {
      t.end = e.timestamp
      t.status = e.status
      if (e.result !== undefined) t.result = e.result
    } else {
      const entry = { message: e.message, ...(e.data === undefined ? {} : { data: e.data }) }
      if (e.type === 'info') (t.infos ??= []).push(entry)
      else (t.warnings ??= []).push(entry)
    }
  }

  /** A JSON copy of the tree (what the API returns; later events do not change it). */
  snapshot(): XoTask | undefined {
    return this.root === undefined ? undefined : (JSON.parse(JSON.stringify(this.root)) as XoTask)
  }
}

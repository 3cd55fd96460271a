/**
 * The simulator's object database: XAPI records by class and opaque ref, uuid index, and the event
 * log behind `event.from` / `event.inject`.
 *
 * Every add/mod/del bumps a global event id; `event.from(classes, token, timeout)` returns the latest
 * state of every object of those classes changed after `token` (and deletions), or waits up to
 * `timeout` seconds for one. Class names in events are lower-case as XAPI sends them (`vm`, `vdi`,
 * `task`); `valid_ref_counts` maps each requested lower-case class to its number of live objects, which
 * `xen-api` compares with its task cache.
 */
import { EventEmitter } from 'node:events'

export type XapiValue = string | number | boolean | XapiValue[] | { [key: string]: XapiValue }
export type XapiRecord = Record<string, XapiValue>

interface XapiEvent {
  id: string
  timestamp: string
  class: string
  operation: 'add' | 'mod' | 'del'
  ref: string
  snapshot?: XapiRecord
}

interface Entry {
  cls: string
  record: XapiRecord
  eventId: number
}

export const NULL_REF = 'OpaqueRef:NULL'

/** The stable error a method raises; the JSON-RPC layer sends it as `{ message: code, data: params }`. */
export class XapiFailure extends Error {
  constructor(
    readonly xapiCode: string,
    readonly params: string[] = [],
  ) {
    super(`${xapiCode}(${params.join(', ')})`)
  }
}

function token(id: number): string {
  return String(id).padStart(20, '0')
}

export class ObjectStore {
  private readonly byRef = new Map<string, Entry>()
  private readonly byUuid = new Map<string, string>()
  private readonly tombstones: { cls: string; ref: string; eventId: number }[] = []
  private eventId = 0
  private readonly changes = new EventEmitter()

  constructor() {
    this.changes.setMaxListeners(0)
  }

  /** Lower-case class names are XAPI's event classes; methods use the canonical case (`VM`). */
  add(cls: string, ref: string, record: XapiRecord): void {
    this.byRef.set(ref, { cls, record, eventId: ++this.eventId })
    const uuid = record.uuid
    if (typeof uuid === 'string') this.byUuid.set(uuid, ref)
    this.changes.emit('change', cls)
  }

  get(cls: string, ref: string): XapiRecord {
    const e = this.byRef.get(ref)
    if (e === undefined || e.cls !== cls) throw new XapiFailure('HANDLE_INVALID', [cls, ref])
    return e.record
  }

  find(ref: string): { cls: string; record: XapiRecord } | undefined {
    const e = this.byRef.get(ref)
    return e === undefined ? undefined : { cls: e.cls, record: e.record }
  }

  has(cls: string, ref: string): boolean {
    return this.byRef.get(ref)?.cls === cls
  }

  refByUuid(cls: string, uuid: string): string {
    const ref = this.byUuid.get(uuid)
    if (ref === undefined || this.byRef.get(ref)?.cls !== cls) throw new XapiFailure('UUID_INVALID', [cls, uuid])
    return ref
  }

  all(cls: string): [string, XapiRecord][] {
    const out: [string, XapiRecord][] = []
    for (const [ref, e] of this.byRef) if (e.cls === cls) out.push([ref, e.record])
    return out
  }

  /** Applies `change` to the record and emits a `mod` event. */
  update(cls: string, ref: string, change: (record: XapiRecord) => void): XapiRecord {
    const e = this.byRef.get(ref)
    if (e === undefined || e.cls !== cls) throw new XapiFailure('HANDLE_INVALID', [cls, ref])
    change(e.record)
    e.eventId = ++this.eventId
    this.changes.emit('change', cls)
    return e.record
  }

  /** Emits a `mod` event without changing anything (event.inject). */
  touch(cls: string, ref: string): string {
    this.update(cls, ref, () => undefined)
    return token(this.eventId)
  }

  remove(cls: string, ref: string): void {
    const e = this.byRef.get(ref)
    if (e === undefined || e.cls !== cls) throw new XapiFailure('HANDLE_INVALID', [cls, ref])
    this.byRef.delete(ref)
    const uuid = e.record.uuid
    if (typeof uuid === 'string') this.byUuid.delete(uuid)
    this.tombstones.push({ cls, ref, eventId: ++this.eventId })
    if (this.tombstones.length > 10_000) this.tombstones.splice(0, 5_000)
    this.changes.emit('change', cls)
  }

  currentToken(): string {
    return token(this.eventId)
  }

  private collect(classes: Set<string>, from: number): XapiEvent[] {
    const all = classes.has('*')
    const events: { eventId: number; event: XapiEvent }[] = []
    const now = new Date().toISOString()
    for (const [ref, e] of this.byRef) {
      const lc = e.cls.toLowerCase()
      if (e.eventId > from && (all || classes.has(lc))) {
        events.push({ eventId: e.eventId, event: { id: String(e.eventId), timestamp: now, class: lc, operation: 'mod', ref, snapshot: e.record } })
      }
    }
    for (const t of this.tombstones) {
      const lc = t.cls.toLowerCase()
      if (t.eventId > from && (all || classes.has(lc))) {
        events.push({ eventId: t.eventId, event: { id: String(t.eventId), timestamp: now, class: lc, operation: 'del', ref: t.ref } })
      }
    }
    return events.sort((a, b) => a.eventId - b.eventId).map((e) => e.event)
  }

  /**
   * `event.from`: waits (up to `timeoutMs`, or until `signal` aborts) for changes after `fromToken` in
   * `classes`, then returns them with the new token and the live object counts.
   */
  async eventsFrom(
    classesIn: string[],
    fromToken: string,
    timeoutMs: number,
    signal: AbortSignal,
  ): Promise<{ events: XapiEvent[]; valid_ref_counts: Record<string, number>; token: string }> {
    const classes = new Set(classesIn.map((c) => c.toLowerCase()))
    const from = fromToken === '' ? 0 : Number.parseInt(fromToken, 10)
    if (!Number.isFinite(from)) throw new XapiFailure('EVENT_FROM_TOKEN_PARSE_FAILURE', [fromToken])
    let events = this.collect(classes, from)
    if (events.length === 0 && timeoutMs > 0 && !signal.aborted) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer)
          this.changes.off('change', onChange)
          signal.removeEventListener('abort', done)
          resolve()
        }
        // a change of another class does not end the wait; the change just made is the newest event, so
        // this is what collect() would find, without rescanning the whole store on every change of every
        // waiting long-poll (which made a pool of 1,000 VMs slow down with each job's task updates)
        const onChange = (cls: string): void => {
          if (this.eventId > from && (classes.has('*') || classes.has(cls.toLowerCase()))) done()
        }
        const timer = setTimeout(done, timeoutMs)
        this.changes.on('change', onChange)
        signal.addEventListener('abort', done)
      })
      events = this.collect(classes, from)
    }
    const counts: Record<string, number> = {}
    for (const e of this.byRef.values()) {
      const lc = e.cls.toLowerCase()
      if (classes.has('*') || classes.has(lc)) counts[lc] = (counts[lc] ?? 0) + 1
    }
    for (const c of classes) if (c !== '*' && counts[c] === undefined) counts[c] = 0
    return { events, valid_ref_counts: counts, token: this.currentToken() }
  }
}

/** A record field as a string (fields the simulator itself set as strings). */
export function text(value: XapiValue | undefined): string {
  return typeof value === 'string' ? value : JSON.stringify(value ?? '')
}

/**
 * A job's task log for people: the consolidated tree (src/queue/task-log.ts `consolidate`, XO's shape)
 * drawn as an indented tree with each task's outcome, what it is about (VM name and uuid, remote id,
 * full or delta), sizes, durations, warnings, and for a failure the coded error with what to do about it.
 * Also the one-line form of a live task-log event, for `backup` and `job follow`.
 */
import type { JsonValue } from '../common/errors.js'
import { formatBytes, formatDurationMs } from '../common/units.js'
import type { TaskLogEvent, TaskSummary } from '../queue/task-log.js'

const MARK: Record<TaskSummary['status'], string> = { success: 'ok', failure: 'FAILED', interrupted: 'INTERRUPTED', skipped: 'skipped', pending: 'running' }

type Obj = Record<string, JsonValue>
const isObj = (v: JsonValue | undefined): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)
const str = (v: JsonValue | undefined): string | undefined => (typeof v === 'string' ? v : undefined)
const num = (v: JsonValue | undefined): number | undefined => (typeof v === 'number' ? v : undefined)

/** What to do about an error, by its code (or XAPI's), when the message does not say it already. */
const FIXES: Record<string, string> = {
  SESSION_AUTHENTICATION_FAILED: 'check the XAPI user and password (--xapi-password-file or BACKUP_PROXY_XAPI_PASSWORD)',
  HOST_IS_SLAVE: 'point --xapi at the pool master',
  UUID_INVALID: 'the VM is not in that pool: check the VM uuid or name and --xapi',
  E_ENCRYPTION: 'give the remote\'s key (--encryption-key-file or BACKUP_PROXY_ENCRYPTION_KEY)',
  EACCES: 'give the proxy\'s user write access to the remote',
  ENOSPC: 'free space on the remote or lower the retention',
  E_CANCELLED: 'it was cancelled; run it again when wanted',
  E_TIMEOUT: 'raise the job\'s timeout setting or back up fewer VMs per run',
}

/** "[E_XAPI] message — fix: ..." from a serialized error or a task result. */
export function describeError(error: JsonValue | undefined): string | undefined {
  if (!isObj(error)) return typeof error === 'string' ? error : undefined
  const code = str(error.code)
  const xapiCode = str(error.xapiCode) ?? (isObj(error.fields) ? str(error.fields.xapiCode) : undefined)
  const message = str(error.message) ?? JSON.stringify(error)
  const fix = (xapiCode !== undefined ? FIXES[xapiCode] : undefined) ?? Object.entries(FIXES).find(([k]) => k === code || message.includes(k))?.[1]
  return `${code === undefined ? '' : `[${code}] `}${message}${fix === undefined ? '' : ` — fix: ${fix}`}`
}

export interface ViewNames {
  /** VM uuid → name, when known */
  vms?: ReadonlyMap<string, string>
  /** remote id → display URL, when known */
  remotes?: ReadonlyMap<string, string>
}

function title(t: TaskSummary, names: ViewNames): string {
  const d = isObj(t.data) ? t.data : {}
  const type = str(d.type)
  const id = str(d.id)
  if (type === 'VM' && id !== undefined) {
    const name = str(d.name_label) ?? names.vms?.get(id)
    return name === undefined ? `VM ${id}` : `VM ${name} (${id})`
  }
  if (type === 'remote' && id !== undefined) {
    const where = names.remotes?.get(id)
    return `${t.message} to ${id}${where === undefined ? '' : ` ${where}`}${d.isFull === true ? ' (full)' : d.isFull === false ? ' (delta)' : ''}`
  }
  if (t.message === 'backup' && str(d.jobName) !== undefined) return `backup job ${str(d.jobName)}${str(d.mode) === undefined ? '' : ` (${str(d.mode)})`}`
  return t.message
}

function facts(t: TaskSummary): string[] {
  const out: string[] = []
  const r = isObj(t.result) ? t.result : {}
  const size = num(r.size) ?? num(r.sizeBytes)
  if (size !== undefined && t.status === 'success') out.push(formatBytes(size))
  if (t.end !== undefined) {
    const ms = t.end - t.start
    out.push(formatDurationMs(ms))
    if (size !== undefined && size > 0 && ms > 0 && t.status === 'success') out.push(`${formatBytes(size / (ms / 1000))}/s`)
  }
  return out
}

function lines(t: TaskSummary, names: ViewNames, indent: string, out: string[]): void {
  const f = facts(t)
  out.push(`${indent}${MARK[t.status]}  ${title(t, names)}${f.length === 0 ? '' : `  ${f.join(', ')}`}`)
  const inner = `${indent}    `
  for (const i of t.infos ?? []) out.push(`${inner}· ${i.message}`)
  for (const w of t.warnings ?? []) out.push(`${inner}warning: ${w.message}${isObj(w.data) && str(w.data.error) !== undefined ? `: ${str(w.data.error)}` : ''}`)
  if (t.status === 'failure' || t.status === 'interrupted') {
    const why = describeError(t.result)
    if (why !== undefined) out.push(`${inner}error: ${why}`)
  }
  for (const c of t.tasks ?? []) lines(c, names, inner, out)
}

/** The whole tree as text, one task a line, children indented. */
export function renderTaskTree(tree: TaskSummary, names: ViewNames = {}): string {
  const out: string[] = []
  lines(tree, names, '', out)
  return `${out.join('\n')}\n`
}

const parents = new WeakMap<TaskSummary, TaskSummary>()

/** The task's title, after its VM's when it runs inside one (`VM x (uuid): snapshot`): events of VMs backed up at once interleave. */
function qualified(t: TaskSummary, names: ViewNames): string {
  let p = parents.get(t)
  while (p !== undefined && !(isObj(p.data) && p.data.type === 'VM')) p = parents.get(p)
  return p === undefined || p === t ? title(t, names) : `${title(p, names)}: ${title(t, names)}`
}

/** One live event as a line: `start VM web-01 (uuid)`, `warning ...`, `end export: ok`. */
export function renderEvent(e: TaskLogEvent, byId: Map<string, TaskSummary>, names: ViewNames = {}): string {
  const time = new Date(e.timestamp).toISOString().slice(11, 19)
  if (e.event === 'start') {
    const t: TaskSummary = { id: e.taskId, message: e.message, start: e.timestamp, status: 'pending', ...(e.data === undefined ? {} : { data: e.data }) }
    byId.set(e.taskId, t)
    const parent = e.parentId === undefined ? undefined : byId.get(e.parentId)
    if (parent !== undefined) parents.set(t, parent)
    return `${time} start  ${qualified(t, names)}`
  }
  const t = byId.get(e.taskId)
  const what = t === undefined ? e.taskId : qualified(t, names)
  if (e.event === 'end') {
    if (t !== undefined) {
      t.status = e.status
      t.end = e.timestamp
      if (e.result !== undefined) t.result = e.result
    }
    const f = t === undefined ? [] : facts(t)
    const why = e.status === 'failure' || e.status === 'interrupted' ? describeError(e.result) : undefined
    return `${time} ${MARK[e.status]}  ${what}${f.length === 0 ? '' : `  ${f.join(', ')}`}${why === undefined ? '' : `: ${why}`}`
  }
  const detail = isObj(e.data) && str(e.data.error) !== undefined ? `: ${str(e.data.error)}` : ''
  return `${time} ${e.event === 'warning' ? 'warning' : 'info'}  ${what}: ${e.message}${detail}`
}

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
  /** the name of every VM of the job, when its pattern selects VMs by one name_label */
  vmName?: string
  /** remote id → display URL, when known */
  remotes?: ReadonlyMap<string, string>
}

/** What a job's task (its BullMQ data) says about names: the one VM name its pattern selects, its remotes' URLs when in clear. */
export function namesOfTask(task: unknown, redact: (url: string) => string): ViewNames {
  const t = isObj(task as JsonValue) ? (task as Obj) : {}
  const job = isObj(t.job) ? t.job : {}
  const vms = isObj(job.vms) ? job.vms : {}
  const names: ViewNames = {}
  // {name_label: 'web-01'} alone selects VMs all named so (XO's smart-mode pattern)
  if (Object.keys(vms).length === 1 && typeof vms.name_label === 'string') names.vmName = vms.name_label
  const remotes = isObj(t.remotes) ? t.remotes : {}
  // a URL sealed at rest (an opaque string) names nothing: the remote id alone then
  const urls = Object.entries(remotes).flatMap(([id, r]) => (isObj(r) && typeof r.url === 'string' && /^[a-z][a-z0-9+.-]*:\/\//i.test(r.url) ? [[id, redact(r.url)] as const] : []))
  if (urls.length > 0) names.remotes = new Map(urls)
  return names
}

const vmNameOf = (d: Obj, id: string, names: ViewNames): string | undefined => str(d.name_label) ?? names.vms?.get(id) ?? names.vmName

/** `VM web-01 (uuid)` (names need not be unique), or `VM uuid` when its name is not known. */
function vmTitle(d: Obj, id: string, names: ViewNames): string {
  const name = vmNameOf(d, id, names)
  return name === undefined ? `VM ${id}` : `VM ${name} (${id})`
}

/** The remote (or SR) a task writes to: `type: 'remote'`/`'SR'` tasks (XO's export tasks) and XO's health check (`data.remote`). */
function targetOf(d: Obj): { kind: 'remote' | 'SR'; id: string; name?: string } | undefined {
  const type = str(d.type)
  const id = str(d.id)
  if ((type === 'remote' || type === 'SR') && id !== undefined) return { kind: type, id, ...(str(d.name_label) === undefined ? {} : { name: str(d.name_label)! }) }
  const remote = str(d.remote)
  return remote === undefined ? undefined : { kind: 'remote', id: remote }
}

/** `remote r1` (`remote r1 nfs://host/path` with `withUrl`), `SR name (uuid)`. */
function targetLabel(target: { kind: 'remote' | 'SR'; id: string; name?: string }, names: ViewNames, withUrl = false): string {
  if (target.kind === 'SR') return target.name === undefined ? `SR ${target.id}` : `SR ${target.name} (${target.id})`
  const where = withUrl ? names.remotes?.get(target.id) : undefined
  return `remote ${target.id}${where === undefined || where === '' ? '' : ` ${where}`}`
}

function title(t: TaskSummary, names: ViewNames): string {
  const d = isObj(t.data) ? t.data : {}
  const type = str(d.type)
  const id = str(d.id)
  if (type === 'VM' && id !== undefined) return vmTitle(d, id, names)
  const target = targetOf(d)
  if (target !== undefined && (type === 'remote' || type === 'SR')) {
    const label = targetLabel(target, names, true)
    return `${t.message} to ${label}${d.isFull === true ? ' (full)' : d.isFull === false ? ' (delta)' : ''}`
  }
  if (target !== undefined) return `${t.message} on ${targetLabel(target, names, true)}`
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

/**
 * The task's title after what it belongs to, for lines read out of their tree: events of VMs backed up
 * at once, and of one VM's remotes, interleave: `VM web-01 (uuid): snapshot` below a VM,
 * `VM web-01 (uuid) → remote r1: transfer` below one of its export tasks.
 */
function qualified(t: TaskSummary, names: ViewNames): string {
  let vm: TaskSummary | undefined
  let target: ReturnType<typeof targetOf>
  for (let p = parents.get(t); p !== undefined; p = parents.get(p)) {
    const d = isObj(p.data) ? p.data : {}
    if (vm === undefined && d.type === 'VM' && str(d.id) !== undefined) vm = p
    target ??= vm === undefined ? targetOf(d) : undefined
  }
  const own = title(t, names)
  if (vm === undefined) return target === undefined ? own : `${targetLabel(target, names)}: ${own}`
  const vmData = isObj(vm.data) ? vm.data : {}
  const vmLabel = vmTitle(vmData, str(vmData.id)!, names)
  return target === undefined ? `${vmLabel}: ${own}` : `${vmLabel} → ${targetLabel(target, names)}: ${own}`
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
  const what = t === undefined ? `task ${e.taskId}` : qualified(t, names)
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

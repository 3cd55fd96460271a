/**
 * XAPI methods of the simulator, dispatched by name as the JSON-RPC endpoint receives them: sessions,
 * `system.listMethods`, the generic per-class accessors XAPI generates (`get_all_records`,
 * `get_record`, `get_by_uuid`, `get_<field>`, `set_<field>`, `add_to_<map>`, `remove_from_<map>`,
 * `add_<set>`, `remove_<set>`), `event.from`/`event.inject`, `task.*`, `VM.snapshot`/`checkpoint`/
 * `destroy`, `VM.update_allowed_operations`, `VDI.create`, `VDI.destroy`, and (vm-ops.ts) `VM.create`,
 * `VM.start`, `VM.clean_shutdown`, `VM.hard_shutdown`, `VBD.create`, `VIF.create`, `VIF.destroy`, with their
 * `Async.` forms. Failures are `XapiFailure`s with XAPI's codes.
 */
import { XapiFailure, type XapiRecord, type XapiValue } from './store.js'
import type { SimPool } from './pool.js'
import type { SimTasks } from './tasks.js'
import { SimVmOps } from './vm-ops.js'

const SIM_CLASSES = ['pool', 'host', 'SR', 'VDI', 'VBD', 'VIF', 'VM', 'network', 'task', 'PIF', 'VM_guest_metrics'] as const

/** Fields a client may set (XAPI rejects setters of read-only fields as unknown methods). */
const SETTABLE = new Set(['name_label', 'name_description', 'other_config', 'tags', 'blocked_operations', 'sm_config', 'xenstore_data', 'is_a_template'])

const SPECIFIC = [
  'session.login_with_password',
  'session.logout',
  'system.listMethods',
  'event.from',
  'event.inject',
  'task.create',
  'task.cancel',
  'task.destroy',
  'VM.snapshot',
  'VM.checkpoint',
  'VM.destroy',
  'VDI.create',
  'VDI.destroy',
  'VDI.clone',
  'VM.update_allowed_operations',
  'VM.create',
  'VM.start',
  'VM.clean_shutdown',
  'VM.hard_shutdown',
  'VBD.create',
  'VIF.create',
  'VIF.destroy',
]
const ASYNC = new Set(['VM.snapshot', 'VM.checkpoint', 'VM.destroy', 'VDI.create', 'VDI.destroy', 'VDI.clone', 'VM.create', 'VM.start', 'VM.clean_shutdown', 'VM.hard_shutdown', 'VBD.create', 'VIF.create', 'VIF.destroy'])

interface Session {
  user: string
  valid: boolean
}

/** A method added by another module of the simulator (NBD, CBT): args without the session, and the session. */
type SimMethod = (args: unknown[], sessionId: string) => XapiValue

export class SimRpc {
  readonly sessions = new Map<string, Session>()
  readonly vmOps: SimVmOps
  /** methods added by other modules (cbt.ts, nbd-server.ts); they win over the built-in ones; `async` ones also answer `Async.` */
  readonly extensions = new Map<string, { fn: SimMethod; async: boolean }>()

  constructor(
    private readonly pool: SimPool,
    private readonly tasks: SimTasks,
    private readonly credentials: { user: string; password: string },
  ) {
    this.vmOps = new SimVmOps(pool)
  }

  /** Throws SESSION_INVALID unless `id` is a live session. */
  checkSession(id: unknown): void {
    if (typeof id !== 'string' || this.sessions.get(id)?.valid !== true) throw new XapiFailure('SESSION_INVALID', [String(id)])
  }

  /** Admin fault: every open session becomes invalid (clients must log in again). */
  expireSessions(): void {
    for (const s of this.sessions.values()) s.valid = false
  }

  listMethods(): string[] {
    const generic = ['get_all_records', 'get_all', 'get_record', 'get_by_uuid', 'get_by_name_label']
    const out = [...SPECIFIC, ...[...ASYNC].map((m) => `Async.${m}`)]
    for (const [name, e] of this.extensions) out.push(name, ...(e.async ? [`Async.${name}`] : []))
    for (const cls of SIM_CLASSES) for (const g of generic) out.push(`${cls}.${g}`)
    return out
  }

  async call(method: string, params: unknown[], signal: AbortSignal): Promise<XapiValue> {
    if (method === 'session.login_with_password') {
      const [user, password] = params
      if (user !== this.credentials.user || password !== this.credentials.password) {
        throw new XapiFailure('SESSION_AUTHENTICATION_FAILED', [String(user), 'Authentication failure'])
      }
      const ref = this.pool.newRef()
      this.sessions.set(ref, { user, valid: true })
      return ref
    }
    if (method === 'system.listMethods') return this.listMethods()
    this.checkSession(params[0])
    const args = params.slice(1)
    if (method === 'session.logout') {
      this.sessions.delete(String(params[0]))
      return ''
    }
    if (method.startsWith('Async.')) {
      const inner = method.slice('Async.'.length)
      const ext = this.extensions.get(inner)
      if (!ASYNC.has(inner) && ext?.async !== true) throw new XapiFailure('MESSAGE_METHOD_UNKNOWN', [method])
      const session = String(params[0])
      return this.tasks.runAsync(inner, () => {
        const result = ext === undefined ? this.sync(inner, args) : ext.fn(args, session)
        return typeof result === 'string' ? result : ''
      })
    }
    if (method === 'event.from') {
      const [classes, token, timeoutS] = args
      if (!Array.isArray(classes) || typeof token !== 'string') throw new XapiFailure('MESSAGE_PARAMETER_COUNT_MISMATCH', [method, '3', String(args.length)])
      const timeoutMs = Math.min(Math.max(0, Number(timeoutS ?? 0) * 1000), 300_000)
      const result = await this.pool.store.eventsFrom(classes.map(String), token, timeoutMs, signal)
      return result as unknown as XapiValue
    }
    const ext = this.extensions.get(method)
    if (ext !== undefined) return ext.fn(args, String(params[0]))
    return this.sync(method, args)
  }

  /** A method that needs no `await`: a specific one, else a generic accessor of a class. */
  private sync(method: string, args: unknown[]): XapiValue {
    const specific = this.specific(method, args)
    if (specific !== NOT_SPECIFIC) return specific
    const dot = method.indexOf('.')
    const cls = method.slice(0, dot)
    if (dot < 0 || !(SIM_CLASSES as readonly string[]).includes(cls)) throw new XapiFailure('MESSAGE_METHOD_UNKNOWN', [method])
    return this.generic(cls, method.slice(dot + 1), method, args)
  }

  /** The methods of SPECIFIC that answer at once; NOT_SPECIFIC for any other. */
  private specific(method: string, args: unknown[]): XapiValue | typeof NOT_SPECIFIC {
    const s = this.pool.store
    const str = (i: number): string => stringArg(method, args, i)
    switch (method) {
      case 'event.inject':
        return s.touch(canonicalClass(str(0)), str(1))
      case 'task.create':
        return this.tasks.create(str(0), typeof args[1] === 'string' ? args[1] : '')
      case 'task.cancel':
        this.tasks.cancel(str(0))
        return ''
      case 'task.destroy':
        this.tasks.destroy(str(0))
        return ''
      case 'VM.snapshot':
        return this.pool.snapshot(str(0), str(1), Array.isArray(args[2]) ? args[2].map(String) : [])
      case 'VM.checkpoint':
        return this.pool.snapshot(str(0), str(1), [], true)
      case 'VM.destroy': {
        const vm = s.get('VM', str(0))
        if (vm.power_state === 'Running') throw new XapiFailure('VM_BAD_POWER_STATE', [str(0), 'halted', 'running'])
        this.vmOps.dropGuestMetrics(vm)
        this.pool.destroyVm(str(0))
        return ''
      }
      case 'VM.create':
        return this.vmOps.createVm(args[0])
      case 'VM.start':
        this.vmOps.start(str(0))
        return ''
      case 'VM.clean_shutdown':
      case 'VM.hard_shutdown':
        this.vmOps.shutdown(str(0))
        return ''
      case 'VBD.create':
        return this.vmOps.createVbd(args[0])
      case 'VIF.create':
        return this.vmOps.createVif(args[0])
      case 'VIF.destroy':
        this.vmOps.destroyVif(str(0))
        return ''
      case 'VDI.destroy':
        this.pool.destroyVdi(str(0))
        return ''
      case 'VDI.clone':
        return this.vmOps.cloneVdi(str(0))
      case 'VM.update_allowed_operations':
        // XAPI recomputes allowed_operations; the simulator's never change (XO calls it after each backup)
        s.get('VM', str(0))
        return ''
      case 'VDI.create':
        return this.pool.createVdi(args[0])
    }
    return NOT_SPECIFIC
  }

  /** The per-class methods XAPI generates: `get_all_records`, `get_all`, `get_record`, `get_by_uuid`, `get_by_name_label`, then the field accessors. */
  private generic(cls: string, name: string, method: string, args: unknown[]): XapiValue {
    const s = this.pool.store
    const str = (i: number): string => stringArg(method, args, i)
    switch (name) {
      case 'get_all_records': {
        const out: Record<string, XapiValue> = {}
        for (const [ref, record] of s.all(cls)) out[ref] = record
        return out
      }
      case 'get_all':
        return s.all(cls).map(([ref]) => ref)
      case 'get_record':
        return s.get(cls, str(0))
      case 'get_by_uuid':
        return s.refByUuid(cls, str(0))
      case 'get_by_name_label':
        return s
          .all(cls)
          .filter(([, r]) => r.name_label === str(0))
          .map(([ref]) => ref)
    }
    return this.accessor(cls, name, method, args)
  }

  /** `get_<field>`, and for the settable fields `set_<field>`, `add_to_<map>`, `remove_from_<map>`, `add_<set>`, `remove_<set>`. */
  private accessor(cls: string, name: string, method: string, args: unknown[]): XapiValue {
    const s = this.pool.store
    const str = (i: number): string => stringArg(method, args, i)
    const record = (): XapiRecord => s.get(cls, str(0))
    let m: RegExpExecArray | null
    if ((m = /^get_(\w+)$/.exec(name)) !== null) {
      const value = record()[m[1] ?? '']
      if (value === undefined) throw new XapiFailure('MESSAGE_METHOD_UNKNOWN', [method])
      return value
    }
    if ((m = /^set_(\w+)$/.exec(name)) !== null && SETTABLE.has(m[1] ?? '')) {
      const field = m[1] ?? ''
      const value = args[1] as XapiValue
      s.update(cls, str(0), (r) => (r[field] = value))
      return ''
    }
    if ((m = /^add_to_(\w+)$/.exec(name)) !== null && SETTABLE.has(m[1] ?? '')) {
      const field = m[1] ?? ''
      const [key, value] = [str(1), str(2)]
      if (mapField(record(), field, method)[key] !== undefined) throw new XapiFailure('MAP_DUPLICATE_KEY', [cls, field, str(0), key])
      s.update(cls, str(0), (r) => (mapField(r, field, method)[key] = value))
      return ''
    }
    if ((m = /^remove_from_(\w+)$/.exec(name)) !== null && SETTABLE.has(m[1] ?? '')) {
      const field = m[1] ?? ''
      const key = str(1)
      mapField(record(), field, method)
      s.update(cls, str(0), (r) => delete mapField(r, field, method)[key])
      return ''
    }
    if ((m = /^(add|remove)_(\w+)$/.exec(name)) !== null && SETTABLE.has(m[2] ?? '')) {
      const field = m[2] ?? ''
      const value = str(1)
      const current = record()[field]
      if (!Array.isArray(current)) throw new XapiFailure('MESSAGE_METHOD_UNKNOWN', [method])
      const add = m[1] === 'add'
      s.update(cls, str(0), (r) => {
        const set = (r[field] as XapiValue[]).filter((x) => x !== value)
        if (add) set.push(value)
        r[field] = set
      })
      return ''
    }
    throw new XapiFailure('MESSAGE_METHOD_UNKNOWN', [method])
  }
}

/** What `specific` answers for a method it does not have. */
const NOT_SPECIFIC = Symbol('not a specific method')

/** Argument `i` of a call, which must be a string. */
function stringArg(method: string, args: unknown[], i: number): string {
  const v = args[i]
  if (typeof v !== 'string') throw new XapiFailure('MESSAGE_PARAMETER_COUNT_MISMATCH', [method, String(i + 1), String(args.length)])
  return v
}

function mapField(record: XapiRecord, field: string, method: string): Record<string, XapiValue> {
  const value = record[field]
  if (value === undefined || typeof value !== 'object' || Array.isArray(value)) throw new XapiFailure('MESSAGE_METHOD_UNKNOWN', [method])
  return value
}

function canonicalClass(lc: string): string {
  return SIM_CLASSES.find((c) => c.toLowerCase() === lc.toLowerCase()) ?? lc
}

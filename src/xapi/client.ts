/**
 * `XapiClient`: the typed face of the `xen-api` package for what backup needs.
 *
 * - connect with url + user/password (+ `allowUnauthorized`), waiting for the object cache to fill;
 *   the package keeps the cache current through `event.from`, logs in again on SESSION_INVALID, and
 *   `call()` reconnects when the connection was dropped;
 * - list VMs/VDIs/VBDs/VIFs/SRs as typed plain records, wait for an object by ref/uuid through events;
 * - snapshot/checkpoint, tags and `other_config` entries (what XO's backups write there is
 *   src/backup/backup-keys.ts), destroy a snapshot with its VDIs;
 * - exports: `exportDescriptor()` returns plain data (session, refs, a fresh task) that a worker thread
 *   opens with `openVdiExport()`; `openExport()` does both on this thread; `cancelTask()` stops it;
 * - imports (restore): `createVdi()` on an SR, `importDescriptor()` (same plain data for a
 *   `PUT /import_raw_vdi/`, see src/xapi/restore-import.ts), `destroyVdi()`.
 *
 * Errors are `XapiError` (E_XAPI) with the XAPI code kept (see errors.ts). Transient network errors are
 * retried with exponential backoff for read-only calls and for connection refusals (the request never
 * reached XAPI); other calls are not retried, since XAPI may have applied them.
 */
import { createClient, type Xapi, type XenApiRecord } from 'xen-api'
import { closeAgent } from './close-agent.js'
import { CancelledError, TimeoutError, XapiError } from '../common/errors.js'
import { SESSION_RENEWING, isTransient, toXapiError } from './errors.js'
import type { VdiImportDescriptor, XvaExportDescriptor, XvaImportDescriptor } from './descriptors.js'
import { openVdiExport, type VdiExport, type VdiExportDescriptor } from './export.js'
import { type XapiRef, type XapiType, type XapiTypes, type XapiVdi, type XapiVm } from './types.js'

interface XapiConnectOptions {
  /** `https://host[:port]` (credentials in the URL are refused: pass user/password) */
  url: string
  user: string
  password: string
  allowUnauthorized?: boolean
  signal?: AbortSignal
  /** give up connecting (login + initial object fetch) after this long; default 60 s */
  connectTimeoutMs?: number
  /** retries of transient network errors; default 5 tries, 250 ms doubling up to 8 s */
  retry?: { tries?: number; initialDelayMs?: number; maxDelayMs?: number }
}

interface CreateVdiOptions {
  srRef: XapiRef
  nameLabel: string
  nameDescription?: string
  virtualSizeBytes: number
  otherConfig?: Record<string, string>
}

/** How long a settled task's outcome stays readable by `waitTask()`. */
const TASK_OUTCOME_TTL_MS = 10 * 60_000
const WATCHED_TYPES = ['pool', 'host', 'SR', 'VDI', 'VBD', 'VIF', 'VM', 'network', 'task', 'PIF', 'VM_guest_metrics']

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) return reject(new CancelledError())
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(new CancelledError())
    }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

function isReadOnlyMethod(method: string): boolean {
  return /^[^.]+\.get_/.test(method)
}

/** A plain JSON-safe copy of a wrapped xen-api record, with `$ref`. */
function plain<T>(record: XenApiRecord): T {
  return { ...structuredClone({ ...record }), $ref: record.$ref } as T
}

export class XapiClient {
  private closed = false
  /**
   * Outcome of every task this client created, watched from the moment it exists. xen-api destroys a task it
   * created as soon as it settles, after which `Xapi#watchTask()` would wait forever for a task that will never
   * appear again; `waitTask()` answers from here instead. Entries go `TASK_OUTCOME_TTL_MS` after the task settled, or when the client closes.
   */
  private readonly taskOutcomes = new Map<XapiRef, Promise<unknown>>()
  /** The timers that forget settled outcomes: cleared on close, else each would keep this client (and its whole object cache) alive for TASK_OUTCOME_TTL_MS after the job. */
  private readonly forgetTimers = new Set<NodeJS.Timeout>()

  private constructor(
    private readonly xapi: Xapi,
    /** base URL without credentials */
    readonly url: string,
    private readonly allowUnauthorized: boolean,
    private readonly retry: { tries: number; initialDelayMs: number; maxDelayMs: number },
  ) {}

  /** Connects and waits until the object cache is filled. */
  static async connect(options: XapiConnectOptions): Promise<XapiClient> {
    let url: URL
    try {
      url = new URL(options.url)
    } catch {
      throw new XapiError(`invalid XAPI URL "${options.url}": expected https://host[:port]`)
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new XapiError(`invalid XAPI URL "${options.url}": protocol must be http or https`)
    if (url.username !== '' || url.password !== '') throw new XapiError('the XAPI URL must not contain credentials: pass user and password separately')
    if (options.user === '') throw new XapiError('an XAPI user is required')
    const base = `${url.protocol}//${url.host}`
    const retry = { tries: 5, initialDelayMs: 250, maxDelayMs: 8000, ...options.retry }
    const xapi = createClient({
      url: base,
      auth: { user: options.user, password: options.password },
      allowUnauthorized: options.allowUnauthorized === true,
      watchEvents: WATCHED_TYPES,
      httpInactivityTimeout: 5 * 60_000,
      eventPollDelay: 5_000,
    })
    const client = new XapiClient(xapi, base, options.allowUnauthorized === true, retry)
    const timeoutMs = options.connectTimeoutMs ?? 60_000
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(`connecting to XAPI at ${base} took more than ${timeoutMs} ms; check the address and that XAPI is up`)), timeoutMs)
    })
    try {
      await Promise.race([client.withRetry(`connecting to XAPI at ${base}`, true, () => xapi.connect(), options.signal), timeout])
      await Promise.race([xapi.objectsFetched, timeout])
      return client
    } catch (error) {
      await xapi.disconnect().catch(() => undefined)
      throw error
    } finally {
      clearTimeout(timer)
    }
  }

  private async withRetry<T>(what: string, retryable: boolean, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    let delay = this.retry.initialDelayMs
    for (let attempt = 1; ; attempt++) {
      if (signal?.aborted === true) throw new CancelledError(`${what} was cancelled`, { cause: signal.reason })
      try {
        return await fn()
      } catch (raw) {
        const error = toXapiError(raw, what)
        // refused connections and session renewals never reached XAPI: any call can be retried
        const neverSent = error instanceof XapiError && (error.fields.networkCode === 'ECONNREFUSED' || error.fields.networkCode === SESSION_RENEWING)
        if (!(isTransient(error) && (retryable || neverSent)) || attempt >= this.retry.tries) throw error
        await sleep(delay, signal)
        delay = Math.min(delay * 2, this.retry.maxDelayMs)
      }
    }
  }

  private async ensureConnected(): Promise<void> {
    if (this.closed) throw new XapiError('this XAPI client is closed')
    if (this.xapi.status === 'disconnected') await this.withRetry(`reconnecting to XAPI at ${this.url}`, true, () => this.xapi.connect())
  }

  /** Calls an XAPI method (without the session argument); errors mapped, transient ones retried. */
  async call(method: string, ...args: unknown[]): Promise<unknown> {
    await this.ensureConnected()
    return this.withRetry(`XAPI call ${method}`, isReadOnlyMethod(method), () => this.xapi.call(method, ...args))
  }

  /** Calls `Async.<method>` and waits for its task; the result is the task's result (often a ref). */
  async callAsync(method: string, ...args: unknown[]): Promise<unknown> {
    await this.ensureConnected()
    return this.withRetry(`XAPI call ${method}`, false, () => this.xapi.callAsync(method, ...args))
  }

  get sessionId(): string {
    return this.xapi.sessionId
  }

  /** The session id once any renewal in progress is done (xen-api clears it while it logs in again). */
  private async currentSessionId(): Promise<string> {
    for (let i = 0; i < 100; i++) {
      await this.ensureConnected()
      const id = this.xapi.status === 'connected' ? (this.xapi.sessionId as string | undefined) : undefined
      if (typeof id === 'string' && id !== '') return id
      await sleep(100, undefined)
    }
    throw new XapiError(`no XAPI session with ${this.url} after 10 s of renewal; check that XAPI is up`)
  }

  get poolUuid(): string {
    return String(this.xapi.pool.uuid)
  }

  private records<K extends XapiType>(type: K): XapiTypes[K][] {
    const out: XapiTypes[K][] = []
    for (const r of Object.values(this.xapi.objects.all)) if (r.$type === type) out.push(plain<XapiTypes[K]>(r))
    return out
  }

  /** Real VMs (no snapshots, templates or dom0) unless asked. */
  listVms(options: { includeSnapshots?: boolean; includeTemplates?: boolean } = {}): XapiVm[] {
    return this.records('VM').filter(
      (vm) => !vm.is_control_domain && (options.includeSnapshots === true || !vm.is_a_snapshot) && (options.includeTemplates === true || !vm.is_a_template),
    )
  }

  listVdis(): XapiVdi[] {
    return this.records('VDI')
  }

  listVbds(): XapiTypes['VBD'][] {
    return this.records('VBD')
  }

  listVifs(): XapiTypes['VIF'][] {
    return this.records('VIF')
  }

  listSrs(): XapiTypes['SR'][] {
    return this.records('SR')
  }

  /** An object from the cache by ref or uuid; throws XapiError HANDLE_INVALID if absent or of another type. */
  get<K extends XapiType>(type: K, refOrUuid: string): XapiTypes[K] {
    const r = this.xapi.getObject(refOrUuid, undefined)
    if (r === undefined || r.$type !== type) {
      throw new XapiError(`no ${type} ${refOrUuid} on the pool at ${this.url}: it does not exist or was deleted`, {
        fields: { xapiCode: 'HANDLE_INVALID', params: [type, refOrUuid] },
      })
    }
    return plain<XapiTypes[K]>(r)
  }

  /**
   * Waits (through events) until the object exists and `predicate` holds; resolves with its record.
   */
  async waitObject<K extends XapiType>(
    type: K,
    refOrUuid: string,
    options: { predicate?: (record: XapiTypes[K]) => boolean; timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<XapiTypes[K]> {
    const check = (): XapiTypes[K] | undefined => {
      const r = this.xapi.getObject(refOrUuid, undefined)
      if (r === undefined || r.$type !== type) return undefined
      const p = plain<XapiTypes[K]>(r)
      return options.predicate === undefined || options.predicate(p) ? p : undefined
    }
    const now = check()
    if (now !== undefined) return now
    const timeoutMs = options.timeoutMs ?? 60_000
    return new Promise((resolve, reject) => {
      const objects = this.xapi.objects
      const cleanup = (): void => {
        clearTimeout(timer)
        objects.off('add', onChange)
        objects.off('update', onChange)
        options.signal?.removeEventListener('abort', onAbort)
      }
      const onChange = (): void => {
        const r = check()
        if (r !== undefined) {
          cleanup()
          resolve(r)
        }
      }
      const onAbort = (): void => {
        cleanup()
        reject(new CancelledError(`waiting for ${type} ${refOrUuid} was cancelled`))
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new TimeoutError(`${type} ${refOrUuid} did not reach the expected state within ${timeoutMs} ms`))
      }, timeoutMs)
      objects.on('add', onChange)
      objects.on('update', onChange)
      options.signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /** The disks of a VM (or snapshot): VBD + VDI pairs of non-empty Disk VBDs, in userdevice order. */
  vmDisks(vmRefOrUuid: string): { vbd: XapiTypes['VBD']; vdi: XapiVdi }[] {
    const vm = this.get('VM', vmRefOrUuid)
    return vm.VBDs.map((ref) => this.get('VBD', ref))
      .filter((vbd) => vbd.type === 'Disk' && !vbd.empty && vbd.VDI !== 'OpaqueRef:NULL')
      .sort((a, b) => Number(a.userdevice) - Number(b.userdevice))
      .map((vbd) => ({ vbd, vdi: this.get('VDI', vbd.VDI) }))
  }

  /** `VM.snapshot` (or `VM.checkpoint`); resolves with the snapshot once it is in the cache. */
  async snapshotVm(vmRef: XapiRef, nameLabel: string, options: { checkpoint?: boolean; ignoreVdis?: XapiRef[] } = {}): Promise<XapiVm> {
    const method = options.checkpoint === true ? 'VM.checkpoint' : 'VM.snapshot'
    const args: unknown[] = [vmRef, nameLabel]
    if (options.checkpoint !== true && options.ignoreVdis !== undefined && options.ignoreVdis.length > 0) args.push(options.ignoreVdis)
    const ref = await this.callAsync(method, ...args)
    if (typeof ref !== 'string') throw new XapiError(`${method} returned ${JSON.stringify(ref)} instead of a VM ref`)
    // xen-api settles the task from the event batch that carries its end, after adding every object of
    // that batch: a snapshot already in the cache came with its VBDs and VDIs (XAPI creates them before
    // the task ends), so the barrier — one more event round trip, ~200 ms — is only for when it is not
    if (this.xapi.getObject(ref, undefined) === undefined) await this.withRetry('waiting for XAPI events (barrier)', true, () => this.xapi.barrier())
    return this.waitObject('VM', ref)
  }

  /** Sets (or removes, with null) `other_config` entries of an object. */
  async setOtherConfig(type: XapiType | 'pool', ref: XapiRef, entries: Record<string, string | null>): Promise<void> {
    await this.ensureConnected()
    await this.withRetry(`setting other_config of ${type} ${ref}`, false, () => this.xapi.setFieldEntries(type, ref, 'other_config', entries))
  }

  async addTag(type: 'VM' | 'VDI', ref: XapiRef, tag: string): Promise<void> {
    await this.call(`${type}.add_tags`, ref, tag)
  }

  /** Destroys a snapshot VM and then its VDIs (XAPI's VM.destroy keeps the VDIs). */
  async destroySnapshot(snapshotRef: XapiRef): Promise<void> {
    const snap = this.get('VM', snapshotRef)
    if (!snap.is_a_snapshot) throw new XapiError(`refusing to destroy ${snapshotRef}: it is not a snapshot`, { fields: { vm: snap.uuid } })
    const vdis = this.vmDisks(snapshotRef).map((d) => d.vdi.$ref)
    await this.callAsync('VM.destroy', snapshotRef)
    for (const vdi of vdis) await this.callAsync('VDI.destroy', vdi)
  }

  /** Creates a task (destroyed by xen-api once settled); returns its ref. */
  async createTask(nameLabel: string, nameDescription = ''): Promise<XapiRef> {
    await this.ensureConnected()
    const ref = await this.withRetry('creating an XAPI task', false, () => this.xapi.createTask(nameLabel, nameDescription))
    const outcome = this.xapi.watchTask(ref)
    outcome.catch(() => undefined) // read by waitTask(), or by nobody (an export's task ends with its stream)
    this.taskOutcomes.set(ref, outcome)
    const forget = (): void => {
      if (this.closed) return
      const timer = setTimeout(() => {
        this.forgetTimers.delete(timer)
        this.taskOutcomes.delete(ref)
      }, TASK_OUTCOME_TTL_MS).unref()
      this.forgetTimers.add(timer)
    }
    outcome.then(forget, forget)
    return ref
  }

  /** Cancels a task; for an export task, XAPI stops the stream. A task already settled is ignored. */
  async cancelTask(taskRef: XapiRef): Promise<void> {
    await this.call('task.cancel', taskRef)
  }

  /** Resolves when the task succeeds, rejects with its XAPI error (or CancelledError). */
  async waitTask(taskRef: XapiRef): Promise<unknown> {
    try {
      return await (this.taskOutcomes.get(taskRef) ?? this.xapi.watchTask(taskRef))
    } catch (error) {
      throw toXapiError(error, `XAPI task ${taskRef}`)
    }
  }

  /** Plain data a worker thread passes to `openVdiExport()`: session, refs and a fresh task. */
  async exportDescriptor(vdiRef: XapiRef, options: { baseRef?: XapiRef; format?: 'vhd' | 'raw'; maxRateBytesPerSecond?: number } = {}): Promise<VdiExportDescriptor> {
    const format = options.format ?? 'vhd'
    const vdi = this.get('VDI', vdiRef)
    if (options.baseRef !== undefined) this.get('VDI', options.baseRef)
    const taskRef = await this.createTask(`[backup-proxy] export ${vdi.name_label}`, `${format}${options.baseRef === undefined ? '' : ' delta'} export of VDI ${vdi.uuid}`)
    return {
      url: this.url,
      sessionId: await this.currentSessionId(),
      vdiRef: vdi.$ref,
      format,
      taskRef,
      allowUnauthorized: this.allowUnauthorized,
      ...(options.baseRef === undefined ? {} : { baseRef: options.baseRef }),
      ...(options.maxRateBytesPerSecond === undefined ? {} : { maxRateBytesPerSecond: options.maxRateBytesPerSecond }),
    }
  }

  /** Export on this thread: descriptor + `openVdiExport`; the task is cancelled if opening fails. */
  async openExport(
    vdiRef: XapiRef,
    options: { baseRef?: XapiRef; format?: 'vhd' | 'raw'; maxRateBytesPerSecond?: number; signal?: AbortSignal; inactivityTimeoutMs?: number } = {},
  ): Promise<VdiExport & { taskRef: XapiRef }> {
    const { signal, inactivityTimeoutMs, ...rest } = options
    const descriptor = await this.exportDescriptor(vdiRef, rest)
    const taskRef = descriptor.taskRef as string
    try {
      const opened = await openVdiExport({
        ...descriptor,
        ...(signal === undefined ? {} : { signal }),
        ...(inactivityTimeoutMs === undefined ? {} : { inactivityTimeoutMs }),
      })
      return { ...opened, taskRef }
    } catch (error) {
      await this.cancelTask(taskRef).catch(() => undefined)
      throw error
    }
  }

  /** `VDI.create`: an empty user VDI of `virtualSizeBytes` on the SR (XAPI may round the size up); its ref. */
  async createVdi(options: CreateVdiOptions): Promise<XapiRef> {
    if (!Number.isSafeInteger(options.virtualSizeBytes) || options.virtualSizeBytes <= 0) {
      throw new XapiError(`createVdi: virtualSizeBytes must be a positive integer, got ${options.virtualSizeBytes}`)
    }
    const ref = await this.call('VDI.create', {
      name_label: options.nameLabel,
      name_description: options.nameDescription ?? '',
      SR: options.srRef,
      virtual_size: options.virtualSizeBytes,
      type: 'user',
      sharable: false,
      read_only: false,
      other_config: options.otherConfig ?? {},
      xenstore_data: {},
      sm_config: {},
      tags: [],
    })
    if (typeof ref !== 'string') throw new XapiError(`VDI.create returned ${JSON.stringify(ref)} instead of a VDI ref`)
    return ref
  }

  /** `VDI.destroy` (an imported VDI that must not stay after a failed restore). */
  async destroyVdi(vdiRef: XapiRef): Promise<void> {
    await this.call('VDI.destroy', vdiRef)
  }

  /** Plain data for an import into `vdiRef` (session, ref, a fresh task). */
  async importDescriptor(vdiRef: XapiRef, format: 'vhd' | 'raw' = 'vhd'): Promise<VdiImportDescriptor> {
    const taskRef = await this.createTask('[backup-proxy] import', `${format} import into VDI ${vdiRef}`)
    return { url: this.url, sessionId: await this.currentSessionId(), vdiRef, format, taskRef, allowUnauthorized: this.allowUnauthorized }
  }

  /** Plain data a thread opens to stream a VM (or snapshot) as XVA (`GET /export/`, src/xva/http.ts), under a fresh task. */
  async vmExportDescriptor(vmRef: XapiRef, useCompression: string): Promise<XvaExportDescriptor> {
    const vm = this.get('VM', vmRef)
    const taskRef = await this.createTask(`[backup-proxy] export ${vm.name_label}`, `XVA export of VM ${vm.uuid}`)
    return { url: this.url, sessionId: await this.currentSessionId(), vmRef: vm.$ref, useCompression, taskRef, allowUnauthorized: this.allowUnauthorized }
  }

  /** Plain data for an XVA import onto an SR (`PUT /import/?sr_id`), under a fresh task whose result is the new VM. */
  async vmImportDescriptor(srRef: XapiRef): Promise<XvaImportDescriptor> {
    const taskRef = await this.createTask('[backup-proxy] VM import', `XVA import onto SR ${srRef}`)
    return { url: this.url, sessionId: await this.currentSessionId(), srRef, taskRef, allowUnauthorized: this.allowUnauthorized }
  }

  /**
   * Logs out and stops the event loop. `xen-api` has no way to end its pending `event.from` long-poll
   * (up to 60 s, which would keep the process alive): injecting an event on the pool makes XAPI answer
   * it now; once that answer is in (`eventFetchingSuccess`), disconnecting leaves the loop waiting for a
   * reconnection that never comes, with no I/O pending.
   */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const timer of this.forgetTimers) clearTimeout(timer)
    this.forgetTimers.clear()
    this.taskOutcomes.clear()
    if (this.xapi.status === 'connected') {
      const answered = new Promise<void>((resolve) => {
        const timer = setTimeout(done, 2000)
        function done(): void {
          clearTimeout(timer)
          resolve()
        }
        this.xapi.once('eventFetchingSuccess', done)
        this.xapi.once('eventFetchingError', done)
      })
      // best effort: if XAPI is unreachable the long-poll fails by itself and there is nothing to end
      const injected = await this.xapi.call('event.inject', 'pool', this.xapi.pool.$ref).then(
        () => true,
        () => false,
      )
      if (injected) await answered
    }
    await this.xapi.disconnect()
    await closeAgent(this.xapi)
  }
}

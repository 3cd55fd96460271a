/**
 * XAPI tasks in the simulator: `task.create`, `Async.*` calls, task completion with the result encoded
 * as XAPI does (an XML-RPC `<value>` string that `xen-api` parses), `task.cancel` (which also aborts an
 * export bound to the task through `task_id`), and `task.destroy`.
 */
import { NULL_REF, XapiFailure, type ObjectStore } from './store.js'
import { xapiDateTime, type SimPool } from './pool.js'

export class SimTasks {
  /** abort controllers of exports running under a task */
  private readonly bound = new Map<string, AbortController>()

  constructor(private readonly pool: SimPool) {}

  private get store(): ObjectStore {
    return this.pool.store
  }

  create(nameLabel: string, nameDescription: string): string {
    const ref = this.pool.newRef()
    this.store.add('task', ref, {
      uuid: this.pool.newUuid(),
      name_label: nameLabel,
      name_description: nameDescription,
      status: 'pending',
      progress: 0,
      result: '',
      error_info: [],
      created: xapiDateTime(new Date()),
      finished: xapiDateTime(new Date(0)),
      resident_on: this.pool.hostRef,
      subtask_of: NULL_REF,
      subtasks: [],
      other_config: {},
      allowed_operations: ['cancel'],
      current_operations: {},
      type: '<none/>',
    })
    return ref
  }

  isPending(ref: string): boolean {
    return this.store.has('task', ref) && this.store.get('task', ref).status === 'pending'
  }

  progress(ref: string, progress: number): void {
    if (this.isPending(ref)) this.store.update('task', ref, (r) => (r.progress = progress))
  }

  /** `result` is a ref or '' (tasks without result); it is encoded as XAPI's XML-RPC value string. */
  succeed(ref: string, result: string): void {
    if (!this.isPending(ref)) return
    this.bound.delete(ref)
    this.store.update('task', ref, (r) => {
      r.status = 'success'
      r.progress = 1
      r.result = result === '' ? '' : `<value>${result}</value>`
      r.finished = xapiDateTime(new Date())
      r.allowed_operations = []
    })
  }

  fail(ref: string, code: string, params: string[]): void {
    if (!this.isPending(ref)) return
    this.bound.delete(ref)
    this.store.update('task', ref, (r) => {
      r.status = 'failure'
      r.error_info = [code, ...params]
      r.finished = xapiDateTime(new Date())
      r.allowed_operations = []
    })
  }

  cancel(ref: string): void {
    const task = this.store.get('task', ref)
    if (task.status !== 'pending') return
    this.store.update('task', ref, (r) => {
      r.status = 'cancelled'
      r.error_info = ['TASK_CANCELLED', ref]
      r.finished = xapiDateTime(new Date())
      r.allowed_operations = []
    })
    const controller = this.bound.get(ref)
    this.bound.delete(ref)
    controller?.abort(new XapiFailure('TASK_CANCELLED', [ref]))
  }

  destroy(ref: string): void {
    this.bound.get(ref)?.abort(new XapiFailure('TASK_CANCELLED', [ref]))
    this.bound.delete(ref)
    this.store.remove('task', ref)
  }

  /** Binds an export to a task: cancelling the task aborts the returned signal. */
  bind(ref: string): AbortSignal {
    if (!this.isPending(ref)) throw new XapiFailure('HANDLE_INVALID', ['task', ref])
    const controller = new AbortController()
    this.bound.set(ref, controller)
    return controller.signal
  }

  /** Runs `fn` as an `Async.*` call: returns the task ref now, settles the task on the next tick. */
  runAsync(method: string, fn: () => string): string {
    const ref = this.create(`Async.${method}`, '')
    setImmediate(() => {
      try {
        this.succeed(ref, fn())
      } catch (error) {
        if (error instanceof XapiFailure) this.fail(ref, error.xapiCode, error.params)
        else this.fail(ref, 'INTERNAL_ERROR', [String(error)])
      }
    })
    return ref
  }
}

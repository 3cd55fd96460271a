'use strict'
// Test-only stand-in for @vates/task (missing from this registry mirror), written from its documented
// behaviour so XO's backup code runs for real in our tests: a task runs a function inside an
// AsyncLocalStorage context; subtasks inherit the parent's progress callback and abort signal; progress
// events ({ id, type: start|info|warning|property|end, timestamp, ... }) go to `onProgress`;
// `Task.info/warning/set` apply to the current task and do nothing outside one.
const { AsyncLocalStorage } = require('node:async_hooks')

const STATUS = { FAILURE: 'failure', PENDING: 'pending', SUCCESS: 'success' }
const storage = new AsyncLocalStorage()
let counter = 0

function serializeError(error) {
  return { ...error, message: error.message, name: error.name, stack: error.stack }
}

class Task {
  static get abortSignal() {
    return storage.getStore()?._abortController.signal
  }

  static run(opts, fn, ...args) {
    if (typeof opts !== 'object' || opts === null) [opts, fn, args] = [undefined, opts, fn === undefined ? args : [fn, ...args]]
    const thisArg = this !== Task ? this : undefined
    const f = typeof fn === 'function' ? fn : this[fn]
    return new Task(opts).run(() => f.apply(thisArg, args))
  }

  static wrap(opts, fn) {
    if (typeof fn !== 'function') [fn, opts] = [opts, fn]
    return function taskRun(...args) {
      return Task.run(typeof opts === 'function' ? opts.apply(this, args) : opts, () => fn.apply(this, args))
    }
  }

  _abortController = new AbortController()
  #started = false
  #properties
  #parentId
  status = STATUS.PENDING

  constructor({ properties, onProgress } = {}) {
    this.id = `${Date.now().toString(36)}-${++counter}`
    this.#properties = properties
    const parent = storage.getStore()
    if (onProgress !== undefined) this._onProgress = onProgress
    else if (parent !== undefined) {
      this._onProgress = parent._onProgress
      this.#parentId = parent.id
      parent._abortController.signal.addEventListener('abort', () => this._abortController.abort(parent._abortController.signal.reason))
    } else this._onProgress = () => undefined
  }

  #emit(type, data) {
    this._onProgress({ ...data, id: this.id, timestamp: Date.now(), type })
  }

  start() {
    if (this.#started) throw new Error('task has already started')
    this.#started = true
    this.#emit('start', { properties: this.#properties, ...(this.#parentId === undefined ? {} : { parentId: this.#parentId }) })
  }

  #end(status, result) {
    if (!this.#started) this.start()
    this.#emit('end', { status, result: result instanceof Error ? serializeError(result) : result })
    this.status = status
  }

  abort(reason) {
    this._abortController.abort(reason)
  }

  async runInside(fn) {
    if (!this.#started) this.start()
    try {
      return await storage.run(this, fn, this)
    } catch (error) {
      this.#end(STATUS.FAILURE, error)
      throw error
    }
  }

  async run(fn) {
    const result = await this.runInside(fn)
    if (this.status === STATUS.PENDING) this.#end(STATUS.SUCCESS, result)
    return result
  }

  info(message, data) { this.#emit('info', { data, message }) }
  warning(message, data) { this.#emit('warning', { data, message }) }
  set(name, value) { this.#emit('property', { name, value }) }
  success(result) { this.#end(STATUS.SUCCESS, result) }
  failure(error) { this.#end(STATUS.FAILURE, error) }
  wrap(fn) { const task = this; return function taskRun(...args) { return task.run(() => fn.apply(this, args)) } }
  wrapInside(fn) { const task = this; return function taskRunInside(...args) { return task.runInside(() => fn.apply(this, args)) } }
}
for (const name of ['info', 'set', 'warning']) {
  Task[name] = function (...args) {
    const task = storage.getStore()
    return task === undefined ? undefined : task[name](...args)
  }
}

exports.Task = Task
exports.STATUS = STATUS
exports.serializeError = serializeError

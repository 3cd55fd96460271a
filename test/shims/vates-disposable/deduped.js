'use strict'
// Test-only stand-in for @vates/disposable/deduped.js, written from its documented behaviour: calls of the
// wrapped factory with the same key share one disposable resource, disposed when its last user disposes it.
exports.deduped = (factory, keyFn = (...args) => args) => {
  const states = new Map()
  return function dedupedFactory(...args) {
    const key = JSON.stringify(keyFn.apply(this, args))
    let state = states.get(key)
    if (state === undefined) {
      state = { users: 0, resource: Promise.resolve(factory.apply(this, args)) }
      states.set(key, state)
    }
    state.users++
    const current = state
    return current.resource.then((disposable) => ({
      value: disposable.value,
      dispose() {
        if (--current.users === 0) {
          states.delete(key)
          return disposable.dispose()
        }
      },
    }))
  }
}

'use strict'
// Test-only stand-in for @vates/disposable/debounceResource.js: the resource is disposed at once (no delay).
exports.createDebounceResource = () => {
  function debounceResource(disposable) {
    return disposable
  }
  debounceResource.flushAll = () => undefined
  return debounceResource
}

'use strict'
// Test-only stand-in: XO's backup worker process uses it; the tests never start that process.
exports.createCachedLookup = function createCachedLookup() {
  throw new Error('@vates/cached-dns.lookup is not available in this test stand-in')
}

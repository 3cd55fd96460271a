'use strict'
// Test-only stand-in: XO's backup worker process uses it; the tests never start that process.
exports.parseDuration = function parseDuration() {
  throw new Error('@vates/parse-duration is not available in this test stand-in')
}

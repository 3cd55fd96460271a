'use strict'
// Test-only stand-in for @vates/parse-duration: a number is milliseconds, a string is parsed by `ms`
// ('5 min'), as the real package does. @xen-orchestra/xapi's Xapi constructor calls it (the tests
// connect that client to the XAPI simulator).
const ms = require('ms')

exports.parseDuration = function parseDuration(value) {
  if (typeof value === 'number') return value
  const duration = ms(value)
  if (duration === undefined) throw new TypeError(`not a valid duration: ${value}`)
  return duration
}

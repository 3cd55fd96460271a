'use strict'
// Test-only stand-in for @vates/diff: written from its documented behaviour (differences of `b` from
// `a` as a flat list [position, replacement, ..., length, tail]) so vhd-lib can be installed as an oracle.
module.exports = function diff(a, b) {
  const out = []
  const n = Math.min(a.length, b.length)
  let i = 0
  while (i < n) {
    if (a[i] === b[i]) {
      i++
      continue
    }
    const start = i
    while (i < n && a[i] !== b[i]) i++
    out.push(start, b.slice(start, i))
  }
  if (a.length !== b.length) out.push(n, b.slice(n))
  return out
}

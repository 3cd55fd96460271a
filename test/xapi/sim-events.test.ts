/**
 * The simulator's `event.from` long-poll (src/xapi/sim/store.ts): a wait ends on the first add, change or
 * removal of an object of a watched class (or of any class for `*`), not on a change of another class, and
 * returns what changed after the token. The wait checks the class of each change instead of rescanning
 * the store, which kept a pool of 1,000 VMs from slowing down with every job's task updates.
 */
import { setImmediate as tick } from 'node:timers/promises'
import { describe, expect, it } from 'vitest'
import { ObjectStore } from '../../src/xapi/sim/store.js'

const WAIT_MS = 60_000

/** The long-poll, with a flag telling whether it has ended. */
function poll(store: ObjectStore, classes: string[], token: string, signal = new AbortController().signal) {
  const state = { ended: false }
  const result = store.eventsFrom(classes, token, WAIT_MS, signal).finally(() => {
    state.ended = true
  })
  return { state, result }
}

describe('simulator event.from', () => {
  it('a change of another class does not end the wait; one of a watched class does', async () => {
    const store = new ObjectStore()
    store.add('VM', 'OpaqueRef:vm1', { uuid: 'vm-1', name_label: 'a' })
    const p = poll(store, ['vm'], store.currentToken())
    store.add('VDI', 'OpaqueRef:vdi1', { uuid: 'vdi-1' })
    store.update('VDI', 'OpaqueRef:vdi1', (r) => (r.name_label = 'x'))
    await tick()
    await tick()
    expect(p.state.ended).toBe(false)
    store.update('VM', 'OpaqueRef:vm1', (r) => (r.name_label = 'b'))
    const r = await p.result
    expect(r.events.map((e) => [e.class, e.operation, e.ref])).toEqual([['vm', 'mod', 'OpaqueRef:vm1']])
    expect(r.token).toBe(store.currentToken())
    expect(r.valid_ref_counts).toEqual({ vm: 1 })
  })

  it('a removal or an addition of a watched class ends it, and `*` watches every class', async () => {
    const store = new ObjectStore()
    store.add('VM', 'OpaqueRef:vm1', { uuid: 'vm-1' })
    const removal = poll(store, ['VM'], store.currentToken())
    store.remove('VM', 'OpaqueRef:vm1')
    expect((await removal.result).events.map((e) => [e.operation, e.ref])).toEqual([['del', 'OpaqueRef:vm1']])

    const addition = poll(store, ['task'], store.currentToken())
    store.add('task', 'OpaqueRef:t1', { uuid: 't-1' })
    expect((await addition.result).events.map((e) => [e.class, e.ref])).toEqual([['task', 'OpaqueRef:t1']])

    const any = poll(store, ['*'], store.currentToken())
    store.add('SR', 'OpaqueRef:sr1', { uuid: 'sr-1' })
    expect((await any.result).events.map((e) => [e.class, e.ref])).toEqual([['sr', 'OpaqueRef:sr1']])
  })

  it('a wait from a token past the newest event is not ended by a change at or before it', async () => {
    const store = new ObjectStore()
    store.add('VM', 'OpaqueRef:vm1', { uuid: 'vm-1' })
    const ahead = String(Number(store.currentToken()) + 2).padStart(20, '0')
    const stop = new AbortController()
    const p = poll(store, ['vm'], ahead, stop.signal)
    store.update('VM', 'OpaqueRef:vm1', (r) => (r.name_label = 'b'))
    store.update('VM', 'OpaqueRef:vm1', (r) => (r.name_label = 'c'))
    await tick()
    await tick()
    expect(p.state.ended).toBe(false)
    store.update('VM', 'OpaqueRef:vm1', (r) => (r.name_label = 'd'))
    const r = await p.result
    expect(r.events.map((e) => e.snapshot?.name_label)).toEqual(['d'])
    stop.abort()
  })
})

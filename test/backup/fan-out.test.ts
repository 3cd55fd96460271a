/**
 * Fan-out over in-memory targets (the real VHD sinks are exercised end to end in e2e tests; here the
 * targets are plain objects so failures can be injected at an exact block).
 */
import { describe, expect, it } from 'vitest'
import { AllTargetsFailedError, fanOut, type FanOutTarget } from '../../src/common/fan-out.js'
import { CancelledError } from '../../src/common/errors.js'

class MemTarget implements FanOutTarget<number> {
  written: number[] = []
  state = 'new'
  maxInFlight = 0
  #inFlight = 0
  constructor(readonly id: string, readonly failAt = -1, readonly delayMs = 0) {}
  begin() { this.state = 'begun'; return Promise.resolve() }
  async write(block: number) {
    this.#inFlight++
    this.maxInFlight = Math.max(this.maxInFlight, this.#inFlight)
    await new Promise((r) => setTimeout(r, this.delayMs))
    this.#inFlight--
    if (block === this.failAt) throw new Error(`${this.id} broke at ${block}`)
    this.written.push(block)
  }
  end() { this.state = 'ended'; return Promise.resolve() }
  abort() { this.state = 'aborted'; return Promise.resolve() }
}

async function* blocks(n: number, failAt = -1) {
  for (let i = 0; i < n; i++) {
    await Promise.resolve()
    if (i === failAt) throw new Error('source corrupt')
    yield i
  }
}

describe('fanOut', () => {
  it('writes every block to every target, in order, one at a time per target', async () => {
    const ts = [new MemTarget('a'), new MemTarget('b', -1, 2)]
    const r = await fanOut(blocks(20), ts, { maxPendingPerTarget: 2 })
    expect(r).toMatchObject({ succeeded: ['a', 'b'], failed: [], blocks: 20 })
    for (const t of ts) {
      expect(t.written).toEqual([...Array(20).keys()])
      expect(t.state).toBe('ended')
      expect(t.maxInFlight).toBe(1) // one block at a time per target, in order
    }
  })
  it('drops a failing target, reports it, and completes the others', async () => {
    const reported: string[] = []
    const ts = [new MemTarget('a'), new MemTarget('bad', 5), new MemTarget('c')]
    const r = await fanOut(blocks(10), ts, { onTargetFailed: (id) => reported.push(id) })
    expect(r.succeeded).toEqual(['a', 'c'])
    expect(r.failed.map((f) => f.error.message)).toEqual(['bad broke at 5'])
    expect(reported).toEqual(['bad'])
    expect(ts[1]!.state).toBe('aborted')
    expect(ts[0]!.written).toHaveLength(10)
  })
  it('tells when no target will touch a block again: after every live target wrote (or failed) it', async () => {
    const ts = [new MemTarget('a'), new MemTarget('slow', -1, 3), new MemTarget('bad', 4)]
    const settled: { block: number; writtenBy: string[] }[] = []
    const r = await fanOut(blocks(8), ts, {
      maxPendingPerTarget: 3,
      onBlockSettled: (block) => settled.push({ block, writtenBy: ts.filter((t) => t.written.includes(block)).map((t) => t.id) }),
    })
    expect(r.succeeded).toEqual(['a', 'slow'])
    // every block once, in order; each after both live targets had it (and before: bad's writes, while it lived)
    expect(settled.map((s) => s.block)).toEqual([...Array(8).keys()])
    for (const s of settled) expect(s.writtenBy).toEqual(s.block < 4 ? ['a', 'slow', 'bad'] : ['a', 'slow'])
  })
  it('fails when every target failed, naming each', async () => {
    const ts = [new MemTarget('a', 1), new MemTarget('b', 3)]
    const e = await fanOut(blocks(10), ts).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(AllTargetsFailedError)
    expect((e as Error).message).toMatch(/a: a broke at 1.*b: b broke at 3/)
  })
  it('aborts every target when the source fails or the signal aborts', async () => {
    const ts = [new MemTarget('a'), new MemTarget('b')]
    await expect(fanOut(blocks(10, 4), ts)).rejects.toThrow('source corrupt')
    expect(ts.map((t) => t.state)).toEqual(['aborted', 'aborted'])
    const ac = new AbortController()
    const slow = [new MemTarget('a', -1, 5)]
    const p = fanOut(blocks(1000), slow, { signal: ac.signal })
    // abort once blocks flow (a condition, not a delay: holds however slow the machine is)
    const abortWhenWriting = setInterval(() => slow[0]!.written.length >= 3 && ac.abort(), 1)
    p.finally(() => clearInterval(abortWhenWriting)).catch(() => undefined)
    await expect(p).rejects.toBeInstanceOf(CancelledError)
    expect(slow[0]!.state).toBe('aborted')
    expect(slow[0]!.written.length).toBeLessThan(1000)
  })
})

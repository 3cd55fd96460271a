/**
 * The XAPI closes a backup run leaves in the background (src/backup/xapi-closes.ts): xapiClosesSettled
 * waits for every one, those started while it waits included (what the proxy's shutdown relies on).
 */
import { describe, expect, it } from 'vitest'
import { closeInBackground, xapiClosesSettled } from '../../src/backup/xapi-closes.js'

describe('closeInBackground / xapiClosesSettled', () => {
  it('waits for every tracked close, including one started while waiting', async () => {
    const ended: string[] = []
    let endFirst: () => void = () => undefined
    let endSecond: () => void = () => undefined
    closeInBackground(new Promise<void>((resolve) => (endFirst = resolve)).then(() => void ended.push('first')))
    let settled = false
    const waiting = xapiClosesSettled().then(() => (settled = true))
    // the first close ends by starting another (a run that returned while a previous one still closed)
    endFirst()
    closeInBackground(new Promise<void>((resolve) => (endSecond = resolve)).then(() => void ended.push('second')))
    await new Promise((resolve) => setImmediate(resolve))
    expect(settled).toBe(false)
    endSecond()
    await waiting
    expect(ended).toEqual(['first', 'second'])
    await xapiClosesSettled() // nothing left: resolves at once
  })
})

/**
 * XAPI restarts under a connected client: calls made while it is down are retried with backoff
 * (connection refused), and once it is back the client logs in again (SESSION_INVALID) transparently.
 * Non-retryable calls are not retried blindly.
 */
import { afterAll, describe, expect, it } from 'vitest'
import { XapiError } from '../../src/common/errors.js'
import { XapiClient } from '../../src/xapi/client.js'
import { startXapiSimulator, type XapiSimulator } from '../../src/xapi/sim/index.js'

const options = { vms: 1, diskSizeBytes: 4 * 1024 * 1024, disksPerVm: 1, fillRatio: 0.5, seed: 11 }

describe('XapiClient across an XAPI restart', () => {
  const sims: XapiSimulator[] = []
  let client: XapiClient | undefined
  afterAll(async () => {
    await client?.close()
    for (const s of sims) await s.close()
  })

  it('retries while XAPI is down and logs in again when it is back', async () => {
    const first = await startXapiSimulator(options)
    sims.push(first)
    const port = Number(new URL(first.url).port)
    client = await XapiClient.connect({ url: first.url, user: first.user, password: first.password, retry: { tries: 60, initialDelayMs: 100, maxDelayMs: 1000 } })
    const vmRef = client.listVms()[0]!.$ref
    await first.close()

    // a read-only call while XAPI is down: retried until the new XAPI answers
    const pending = client.call('VM.get_name_label', vmRef)
    await new Promise((r) => setTimeout(r, 300))
    const second = await startXapiSimulator({ ...options, port })
    sims.push(second)
    expect(await pending).toBe('sim-vm-0')
    // the next calls use the new session
    expect(await client.call('VM.get_all')).toEqual([vmRef])
  })

  it('gives up after the configured tries with a transient XapiError', async () => {
    const sim = await startXapiSimulator(options)
    const c = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password, retry: { tries: 2, initialDelayMs: 50 } })
    await sim.close()
    try {
      const error = await c.call('VM.get_all').catch((e: unknown) => e)
      expect(error).toBeInstanceOf(XapiError)
      expect((error as XapiError).fields).toMatchObject({ transient: true, networkCode: 'ECONNREFUSED' })
    } finally {
      await c.close()
    }
  })
})

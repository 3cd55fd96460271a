/**
 * What a closed XapiClient leaves behind in a long-lived process (`serve` opens one per job): nothing. Its
 * HTTP agent's sockets are closed (xen-api's own disconnect leaves them open), and no timer keeps the client
 * and its object cache reachable. Both grew a proxy's memory and file descriptors with every job it ran.
 */
import { runInNewContext } from 'node:vm'
import { setFlagsFromString } from 'node:v8'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { XapiClient } from '../../src/xapi/client.js'
import { startXapiSimulator, type XapiSimulator } from '../../src/xapi/sim/index.js'
import { waitFor } from '../helpers/ports.js'

const tcpSockets = () => process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap').length

/** A job's worth of calls: a snapshot and its removal, a task of this client's own that settles (cancelled). */
async function useClient(sim: XapiSimulator): Promise<XapiClient> {
  const client = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  const vm = client.listVms()[0]!
  const snapshot = await client.snapshotVm(vm.$ref, 'close test')
  await client.destroySnapshot(snapshot.$ref)
  const task = await client.createTask('close test')
  await client.cancelTask(task)
  await client.waitTask(task).catch(() => undefined)
  return client
}

describe('XapiClient.close()', () => {
  let sim: XapiSimulator
  beforeAll(async () => {
    sim = await startXapiSimulator({ vms: 1, diskSizeBytes: 4 << 20, disksPerVm: 1, fillRatio: 0.5, seed: 7 })
  })
  afterAll(async () => {
    await sim?.close()
  })

  it('closes every socket the client opened', async () => {
    const before = tcpSockets()
    const client = await useClient(sim)
    expect(tcpSockets()).toBeGreaterThan(before)
    await client.close()
    // the agent is closed when close() returns; its sockets' handles go at the next turns of the loop
    await waitFor(`the client's sockets closed (${tcpSockets()} open, ${before} before)`, () => tcpSockets() <= before, 20_000)
  })

  it('leaves nothing that keeps the closed client (and its object cache) reachable', async () => {
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    // made in a function of its own: a local of this test's frame would keep the client alive
    const ref = await (async () => {
      const client = await useClient(sim)
      await client.close()
      return new WeakRef(client)
    })()
    await waitFor('the closed client collected', async () => {
      gc()
      await new Promise((r) => setImmediate(r))
      return ref.deref() === undefined
    }, 20_000)
  })
})

/**
 * Each fault the simulator injects surfaces as the right error on the client side (openVdiExport /
 * XapiClient), and the admin HTTP API drives the same faults and writes.
 */
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { CancelledError, TimeoutError, XapiError } from '../../src/common/errors.js'
import { XapiClient } from '../../src/xapi/client.js'
import { openVdiExport } from '../../src/xapi/export.js'
import { startXapiSimulator, type XapiSimulator } from '../../src/xapi/sim/index.js'
import { useTempDir } from '../helpers/tmp.js'
import { qemuCompare, run, toFile } from './helpers.js'

const MiB = 1024 * 1024
const tmp = useTempDir('bp-xapi-faults-')

async function drain(stream: NodeJS.ReadableStream): Promise<number> {
  let n = 0
  for await (const chunk of stream as AsyncIterable<Buffer>) n += chunk.length
  return n
}

describe('simulator faults seen by the client', () => {
  let sim: XapiSimulator
  let client: XapiClient
  let vdiRef: string
  let vdiUuid: string
  let vmUuid: string

  beforeAll(async () => {
    sim = await startXapiSimulator({ vms: 1, diskSizeBytes: 16 * MiB, disksPerVm: 1, fillRatio: 1, seed: 3 })
    client = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
    const vm = sim.listVms()[0]!
    vmUuid = vm.uuid
    vdiRef = vm.vdis[0]!.ref
    vdiUuid = vm.vdis[0]!.uuid
  })
  afterEach(() => sim.clearFaults())
  afterAll(async () => {
    await client?.close()
    await sim?.close()
  })

  it('connection reset mid-stream → transient XapiError with the bytes received', async () => {
    sim.setFault({ kind: 'reset', afterBytes: 3 * MiB })
    const { stream } = await client.openExport(vdiRef, { format: 'raw' })
    const error = await drain(stream).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(XapiError)
    expect((error as XapiError).fields).toMatchObject({ transient: true })
    expect((error as XapiError).fields.bytesReceived).toBeLessThanOrEqual(3 * MiB)
  })

  it('stalled stream → TimeoutError after the inactivity timeout', async () => {
    sim.setFault({ kind: 'stall', afterBytes: MiB })
    const { stream } = await client.openExport(vdiRef, { format: 'vhd', inactivityTimeoutMs: 500 })
    const error = await drain(stream).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(TimeoutError)
    expect((error as TimeoutError).code).toBe('E_TIMEOUT')
  })

  it('HTTP 500 → XapiError with the XAPI code and status; `times` limits the fault', async () => {
    sim.setFault({ kind: 'http-error', status: 500, times: 1 })
    const error = await client.openExport(vdiRef, { format: 'vhd' }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(XapiError)
    expect((error as XapiError).xapiCode).toBe('INTERNAL_ERROR')
    expect((error as XapiError).fields.httpStatus).toBe(500)
    // the second export is not affected
    const ok = await client.openExport(vdiRef, { format: 'raw' })
    expect(await drain(ok.stream)).toBe(16 * MiB)

    sim.setFault({ kind: 'http-error', status: 409, xapiCode: 'VDI_IN_USE', vdiUuid })
    const inUse = await client.openExport(vdiRef, { format: 'vhd' }).catch((e: unknown) => e)
    expect((inUse as XapiError).xapiCode).toBe('VDI_IN_USE')
    expect((inUse as XapiError).message).toMatch(/retry later/)
  })

  it('corrupt byte → the VHD fails validation by qemu-img / differs from the raw content', async () => {
    const dir = tmp()
    await toFile((await client.openExport(vdiRef, { format: 'raw' })).stream, join(dir, 'disk.raw'))
    // a byte in the footer copy: the checksum no longer matches
    sim.setFault({ kind: 'corrupt', offset: 100, times: 1 })
    await toFile((await client.openExport(vdiRef, { format: 'vhd' })).stream, join(dir, 'bad-footer.vhd'))
    const info = await run('qemu-img', ['info', join(dir, 'bad-footer.vhd')]).then(
      (r) => `ACCEPTED ${r.stdout}`,
      (e: { stderr?: string }) => `REFUSED ${e.stderr ?? ''}`,
    )
    expect(info).toMatch(/^REFUSED .*checksum/i)
    // a byte of block data (after footer, header, BAT of 8 entries, first bitmap): same size, other content
    sim.setFault({ kind: 'corrupt', offset: 512 + 1024 + 512 + 512 + 1000, times: 1 })
    await toFile((await client.openExport(vdiRef, { format: 'vhd' })).stream, join(dir, 'bad-data.vhd'))
    expect((await qemuCompare(join(dir, 'bad-data.vhd'), join(dir, 'disk.raw'))).identical).toBe(false)
    // without fault: identical
    await toFile((await client.openExport(vdiRef, { format: 'vhd' })).stream, join(dir, 'good.vhd'))
    expect((await qemuCompare(join(dir, 'good.vhd'), join(dir, 'disk.raw'))).identical).toBe(true)
  })

  it('a throttled export (maxRateBytesPerSecond) still delivers exactly the disk', async () => {
    const { stream, sizeBytes } = await client.openExport(vdiRef, { format: 'raw', maxRateBytesPerSecond: 48 * MiB })
    const h = createHash('sha256')
    for await (const chunk of stream as AsyncIterable<Buffer>) h.update(chunk)
    const truth = createHash('sha256')
    for await (const chunk of sim.rawDiskContent(vdiUuid) as AsyncIterable<Buffer>) truth.update(chunk)
    expect(sizeBytes).toBe(16 * MiB)
    expect(h.digest('hex')).toBe(truth.digest('hex'))
  })

  it('slow stream + abort → CancelledError', async () => {
    sim.setFault({ kind: 'slow', bytesPerSecond: 512 * 1024 })
    const controller = new AbortController()
    const d = await client.exportDescriptor(vdiRef, { format: 'raw' })
    const { stream } = await openVdiExport({ ...d, signal: controller.signal })
    // abort once bytes flow (not after a fixed delay: on a loaded machine the stream may not have started)
    const pending = (async () => {
      for await (const _chunk of stream as AsyncIterable<Buffer>) controller.abort()
    })().catch((e: unknown) => e)
    expect(await pending).toBeInstanceOf(CancelledError)
    await client.cancelTask(d.taskRef!)
  })

  it('expired session → SESSION_INVALID on the old export descriptor; calls log in again', async () => {
    const old = await client.exportDescriptor(vdiRef, { format: 'raw' })
    sim.setFault({ kind: 'expire-session' })
    const error = await openVdiExport(old).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(XapiError)
    expect((error as XapiError).xapiCode).toBe('SESSION_INVALID')
    expect((error as XapiError).fields.httpStatus).toBe(401)
    // xen-api re-logs in on SESSION_INVALID: the next call works and the next descriptor has a new session
    expect(await client.call('VM.get_all')).toBeInstanceOf(Array)
    const fresh = await client.exportDescriptor(vdiRef, { format: 'raw' })
    expect(fresh.sessionId).not.toBe(old.sessionId)
    expect(await drain((await openVdiExport(fresh)).stream)).toBe(16 * MiB)
  })

  it('unknown VDI → HANDLE_INVALID; bad parameters are refused before any request', async () => {
    const d = await client.exportDescriptor(vdiRef, { format: 'raw' })
    const error = await openVdiExport({ ...d, vdiRef: 'OpaqueRef:missing' }).catch((e: unknown) => e)
    expect((error as XapiError).xapiCode).toBe('HANDLE_INVALID')
    await expect(openVdiExport({ ...d, format: 'raw', baseRef: vdiRef })).rejects.toThrow(/baseRef needs format "vhd"/)
    await expect(openVdiExport({ ...d, url: 'ftp://x' })).rejects.toThrow(/protocol must be http or https/)
    await client.cancelTask(d.taskRef!)
  })

  it('admin HTTP API: auth, writes, faults', async () => {
    const auth = `Basic ${Buffer.from(`${sim.user}:${sim.password}`).toString('base64')}`
    expect((await fetch(`${sim.url}/sim/vms`)).status).toBe(401)
    const vms = (await (await fetch(`${sim.url}/sim/vms`, { headers: { authorization: auth } })).json()) as { uuid: string }[]
    expect(vms.map((v) => v.uuid)).toEqual([vmUuid])
    const w = await fetch(`${sim.url}/sim/vms/${vmUuid}/write`, { method: 'POST', headers: { authorization: auth }, body: JSON.stringify({ blocks: 2 }) })
    const written = (await w.json()) as { vdiUuid: string; blocks: number[] }[]
    expect(written[0]).toMatchObject({ vdiUuid })
    expect(written[0]?.blocks).toHaveLength(2)
    const bad = await fetch(`${sim.url}/sim/faults`, { method: 'POST', headers: { authorization: auth }, body: JSON.stringify({ kind: 'reset' }) })
    expect(bad.status).toBe(400)
    expect(await bad.text()).toMatch(/afterBytes/)
    const set = await fetch(`${sim.url}/sim/faults`, { method: 'POST', headers: { authorization: auth }, body: JSON.stringify({ kind: 'http-error', status: 503 }) })
    expect(set.status).toBe(200)
    await expect(client.openExport(vdiRef, { format: 'raw' })).rejects.toMatchObject({ fields: { httpStatus: 503 } })
    expect((await fetch(`${sim.url}/sim/faults`, { method: 'DELETE', headers: { authorization: auth } })).status).toBe(200)
    const ok = await client.openExport(vdiRef, { format: 'raw' })
    expect(await drain(ok.stream)).toBe(16 * MiB)
  })
})

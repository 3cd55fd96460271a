/**
 * The real `xen-api` client (through XapiClient) against the XAPI simulator: listing, snapshots,
 * other_config, destroy, and exports checked with independent tools (qemu-img, vhdiinfo, vhdimount).
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { Worker } from 'node:worker_threads'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { XapiError } from '../../src/common/errors.js'
import { XapiClient } from '../../src/xapi/client.js'
import { openVdiExport } from '../../src/xapi/export.js'
import { startXapiSimulator, type XapiSimulator } from '../../src/xapi/sim/index.js'
import { useTempDir } from '../helpers/tmp.js'
import { filesEqual, qemuCompare, run, toFile, withVhdiMount } from './helpers.js'

const MiB = 1024 * 1024
const tmp = useTempDir('bp-xapi-')

async function sha256(stream: Readable): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of stream as AsyncIterable<Buffer>) h.update(chunk)
  return h.digest('hex')
}

describe('XapiClient against the simulator', () => {
  let sim: XapiSimulator
  let client: XapiClient

  beforeAll(async () => {
    sim = await startXapiSimulator({ vms: 2, diskSizeBytes: 32 * MiB, disksPerVm: 2, fillRatio: 0.5, seed: 42 })
    client = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  })
  afterAll(async () => {
    await client?.close()
    await sim?.close()
  })

  it('refuses bad credentials with SESSION_AUTHENTICATION_FAILED', async () => {
    const error = await XapiClient.connect({ url: sim.url, user: 'root', password: 'wrong' }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(XapiError)
    expect((error as XapiError).code).toBe('E_XAPI')
    expect((error as XapiError).xapiCode).toBe('SESSION_AUTHENTICATION_FAILED')
    expect((error as XapiError).message).not.toContain('wrong')
  })

  it('lists VMs, VDIs, VBDs, VIFs and SRs as typed records', () => {
    const truth = sim.listVms()
    const vms = client.listVms()
    expect(vms.map((v) => v.uuid).sort()).toEqual(truth.map((v) => v.uuid).sort())
    for (const t of truth) {
      const disks = client.vmDisks(t.uuid)
      expect(disks.map((d) => d.vdi.uuid)).toEqual(t.vdis.map((v) => v.uuid))
      expect(disks[0]?.vdi.virtual_size).toBe(32 * MiB)
      // physical_size = present 2 MiB blocks: about half of the 16 blocks (fill ratio 0.5)
      expect(disks[0]?.vdi.physical_size).toBeGreaterThan(0)
      expect(disks[0]?.vdi.physical_size).toBeLessThan(32 * MiB)
      expect((disks[0]?.vdi.physical_size ?? 1) % (2 * MiB)).toBe(0)
    }
    expect(client.listVdis()).toHaveLength(4)
    expect(client.listVbds()).toHaveLength(4)
    expect(client.listVifs()).toHaveLength(2)
    expect(client.listSrs()).toHaveLength(1)
    expect(client.listSrs()[0]?.VDIs).toHaveLength(4)
    expect(client.poolUuid).toMatch(/^[0-9a-f-]{36}$/)
  })

  it('maps unknown methods and bad handles to their XAPI codes', async () => {
    const unknown = await client.call('VM.frobnicate', 'OpaqueRef:x').catch((e: unknown) => e)
    expect((unknown as XapiError).xapiCode).toBe('MESSAGE_METHOD_UNKNOWN')
    const handle = await client.call('VM.get_record', 'OpaqueRef:nope').catch((e: unknown) => e)
    expect((handle as XapiError).xapiCode).toBe('HANDLE_INVALID')
    expect(() => client.get('VM', 'OpaqueRef:nope')).toThrow(XapiError)
  })

  it('snapshots, sets other_config entries and tags on a snapshot, destroys it with its VDIs', async () => {
    const vm = client.listVms()[0]!
    const snap = await client.snapshotVm(vm.$ref, 'backup 1')
    expect(snap.is_a_snapshot).toBe(true)
    expect(snap.snapshot_of).toBe(vm.$ref)
    expect(client.vmDisks(snap.$ref)).toHaveLength(2)
    await client.setOtherConfig('VM', snap.$ref, { 'xo:backup:job': 'job-1', 'xo:backup:schedule': 'sched-1' })
    await client.addTag('VM', snap.$ref, 'xo-backup')
    const found = await client.waitObject('VM', snap.$ref, { predicate: (r) => r.tags.includes('xo-backup') })
    expect(found.other_config['xo:backup:job']).toBe('job-1')
    expect(found.other_config['xo:backup:schedule']).toBe('sched-1')
    await client.setOtherConfig('VM', snap.$ref, { 'xo:backup:schedule': null })
    await client.waitObject('VM', snap.$ref, { predicate: (r) => !('xo:backup:schedule' in r.other_config) })
    expect(client.get('VM', snap.$ref).other_config['xo:backup:job']).toBe('job-1')
    const checkpoint = await client.snapshotVm(vm.$ref, 'cp', { checkpoint: true })
    expect(checkpoint.power_state).toBe('Suspended')

    // destroy: the snapshot VM and its VDIs disappear; the VM keeps its disks
    const snapVdis = client.vmDisks(snap.$ref).map((d) => d.vdi.$ref)
    await client.destroySnapshot(snap.$ref)
    await client.waitObject('VM', vm.$ref, { predicate: (r) => !r.snapshots.includes(snap.$ref) })
    await expect(client.call('VM.get_record', snap.$ref)).rejects.toMatchObject({ fields: { xapiCode: 'HANDLE_INVALID' } })
    for (const ref of snapVdis) await expect(client.call('VDI.get_record', ref)).rejects.toMatchObject({ fields: { xapiCode: 'HANDLE_INVALID' } })
    expect(client.vmDisks(vm.$ref)).toHaveLength(2)
  })

  it('refuses to destroy a disk attached to a running VM with VDI_IN_USE', async () => {
    const vdi = client.vmDisks(client.listVms()[1]!.$ref)[0]!.vdi
    const error = await client.callAsync('VDI.destroy', vdi.$ref).catch((e: unknown) => e)
    expect((error as XapiError).xapiCode).toBe('VDI_IN_USE')
  })

  it('exports a full VHD that qemu-img and vhdiinfo accept and that equals the raw export', async () => {
    const vm = client.listVms()[1]!
    const vdi = client.vmDisks(vm.$ref)[0]!.vdi
    const vhd = join(tmp(), 'full.vhd')
    const raw = join(tmp(), 'full.raw')
    const e1 = await client.openExport(vdi.$ref, { format: 'vhd' })
    await toFile(e1.stream, vhd)
    await client.waitObject('task', e1.taskRef, { predicate: (t) => t.status === 'success' }).catch(() => undefined)
    const e2 = await client.openExport(vdi.$ref, { format: 'raw' })
    expect(e2.sizeBytes).toBe(32 * MiB)
    await toFile(e2.stream, raw)
    const info = JSON.parse((await run('qemu-img', ['info', '--output=json', vhd])).stdout) as { format: string; 'virtual-size': number }
    expect(info).toMatchObject({ format: 'vpc', 'virtual-size': 32 * MiB })
    const vhdi = (await run('vhdiinfo', [vhd])).stdout
    expect(vhdi).toContain('Dynamic')
    expect(vhdi).toContain(vdi.uuid)
    expect((await qemuCompare(vhd, raw)).identical).toBe(true)
    // the raw export is the simulator's truth, and it is not all zeros
    expect(await sha256(sim.rawDiskContent(vdi.uuid))).toBe(createHash('sha256').update(await readFile(raw)).digest('hex'))
    expect((await readFile(raw)).some((b) => b !== 0)).toBe(true)
    // sparse: the VHD holds only the present blocks (fill ratio 0.5 of 16 blocks)
    expect(e1.sizeBytes).toBeLessThan(32 * MiB)
  })

  it('streams a differencing VHD with exactly the written blocks; the chain equals the raw export', async () => {
    const vm = client.listVms()[1]!
    const s1 = await client.snapshotVm(vm.$ref, 'base')
    const base = client.vmDisks(s1.$ref)[0]!.vdi
    const baseRawBefore = await sha256(sim.rawDiskContent(base.uuid))
    const written = sim.writeBlocks(vm.uuid, { blocks: 3 })
    expect(written[0]?.blocks).toHaveLength(3)
    const s2 = await client.snapshotVm(vm.$ref, 'delta')
    const child = client.vmDisks(s2.$ref)[0]!.vdi
    // a snapshot keeps the content as of the snapshot
    expect(await sha256(sim.rawDiskContent(base.uuid))).toBe(baseRawBefore)
    expect(await sha256(sim.rawDiskContent(child.uuid))).not.toBe(baseRawBefore)

    const dir = tmp()
    await toFile((await client.openExport(base.$ref, { format: 'vhd' })).stream, join(dir, `${base.uuid}.vhd`))
    const deltaPath = join(dir, 'delta.vhd')
    await toFile((await client.openExport(child.$ref, { format: 'vhd', baseRef: base.$ref })).stream, deltaPath)
    await toFile((await client.openExport(child.$ref, { format: 'raw' })).stream, join(dir, 'child.raw'))
    await toFile((await client.openExport(base.$ref, { format: 'raw' })).stream, join(dir, 'base.raw'))

    const vhdi = (await run('vhdiinfo', [deltaPath])).stdout
    expect(vhdi).toContain('Differential')
    expect(vhdi).toContain(`Parent identifier\t: ${base.uuid}`)
    // BAT of the delta: exactly the written blocks are present
    const delta = await readFile(deltaPath)
    const batOffset = Number(delta.readBigUInt64BE(512 + 16))
    const entries = delta.readUInt32BE(512 + 28)
    const present: number[] = []
    for (let i = 0; i < entries; i++) if (delta.readUInt32BE(batOffset + i * 4) !== 0xffffffff) present.push(i)
    expect(present).toEqual(written[0]?.blocks)

    await withVhdiMount(deltaPath, dir, async (layers) => {
      expect(layers).toHaveLength(2)
      expect(await filesEqual(layers[0]!, join(dir, 'base.raw'))).toBe(true)
      expect(await filesEqual(layers[1]!, join(dir, 'child.raw'))).toBe(true)
    })
  })

  it('opens an export inside a worker thread from the plain descriptor', async () => {
    const vdi = client.vmDisks(client.listVms()[0]!.$ref)[1]!.vdi
    const descriptor = await client.exportDescriptor(vdi.$ref, { format: 'raw', maxRateBytesPerSecond: 1024 * MiB })
    const task = client.waitTask(descriptor.taskRef!)
    // worker threads do not inherit the test runner's TypeScript loader: boot it with tsx's API
    const boot = `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))}; register(); await import(${JSON.stringify(new URL('./fixtures/export-worker.ts', import.meta.url).href)})`
    const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(boot)}`), { workerData: { descriptor } })
    const result = await new Promise<{ sha256: string; sizeBytes: number }>((resolve, reject) => {
      worker.once('message', resolve)
      worker.once('error', reject)
    })
    await worker.terminate()
    expect(result.sizeBytes).toBe(32 * MiB)
    expect(result.sha256).toBe(await sha256(sim.rawDiskContent(vdi.uuid)))
    await task // the export task succeeded
  })

  it('reports the outcome of a task that already settled and was destroyed', async () => {
    const vdi = client.vmDisks(client.listVms()[1]!.$ref)[0]!.vdi
    const e = await client.openExport(vdi.$ref, { format: 'raw' })
    await sha256(e.stream)
    // xen-api destroys the tasks it creates once they settle: wait until XAPI no longer knows this one ...
    for (let i = 0; ; i++) {
      const gone = await client.call('task.get_status', e.taskRef).then(
        () => false,
        (err: unknown) => err instanceof XapiError && err.xapiCode === 'HANDLE_INVALID',
      )
      if (gone) break
      if (i > 500) throw new Error('the export task was never destroyed')
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    // ... and until the client has seen every event up to here (a later change is visible only after the task's 'del')
    const vm = client.listVms()[1]!
    await client.setOtherConfig('VM', vm.$ref, { 'test:marker': e.taskRef })
    await client.waitObject('VM', vm.$ref, { predicate: (r) => r.other_config['test:marker'] === e.taskRef })
    expect(() => client.get('task', e.taskRef)).toThrow(XapiError)
    // no wall-clock race (a loaded machine is slow): a hang is caught by the test's timeout
    expect(await client.waitTask(e.taskRef).then(() => 'succeeded')).toBe('succeeded')
  })

  it('stops an export when its task is cancelled, or when the signal aborts', async () => {
    const vdi = client.vmDisks(client.listVms()[0]!.$ref)[0]!.vdi
    sim.setFault({ kind: 'slow', bytesPerSecond: 256 * 1024, vdiUuid: vdi.uuid })
    try {
      const e = await client.openExport(vdi.$ref, { format: 'raw' })
      const consumed = sha256(e.stream).catch((err: unknown) => err)
      await client.cancelTask(e.taskRef)
      expect(await consumed).toBeInstanceOf(XapiError)
      await expect(client.waitTask(e.taskRef)).rejects.toBeInstanceOf(Error)

      const controller = new AbortController()
      const d = await client.exportDescriptor(vdi.$ref, { format: 'raw' })
      const opened = await openVdiExport({ ...d, signal: controller.signal })
      const reading = sha256(opened.stream).catch((err: unknown) => err)
      controller.abort()
      expect(await reading).toMatchObject({ code: 'E_CANCELLED' })
      await client.cancelTask(d.taskRef!)
    } finally {
      sim.clearFaults()
    }
  })

  it('serves a 1 TiB sparse disk without materializing it', async () => {
    const big = await startXapiSimulator({ vms: 1, diskSizeBytes: 1024 ** 4, disksPerVm: 1, fillRatio: 0.01, seed: 8 })
    const c = await XapiClient.connect({ url: big.url, user: big.user, password: big.password })
    try {
      const vdi = c.listVdis()[0]!
      expect(vdi.virtual_size).toBe(1024 ** 4)
      const controller = new AbortController()
      const e = await c.openExport(vdi.$ref, { format: 'vhd', signal: controller.signal })
      // footer + header + BAT of 524288 entries, then present blocks (bitmap + 2 MiB each), then footer
      const head: Buffer[] = []
      let got = 0
      for await (const chunk of e.stream as AsyncIterable<Buffer>) {
        head.push(chunk)
        got += chunk.length
        if (got >= 4 * MiB) break
      }
      const buf = Buffer.concat(head)
      const entries = buf.readUInt32BE(512 + 28)
      expect(entries).toBe(524288)
      let present = 0
      for (let i = 0; i < entries; i++) if (buf.readUInt32BE(1536 + i * 4) !== 0xffffffff) present++
      expect(present).toBeGreaterThan(0)
      expect(present).toBeLessThan(entries / 50)
      expect(e.sizeBytes).toBe(1536 + entries * 4 + present * (2 * MiB + 512) + 512)
      await c.cancelTask(e.taskRef)
      const raw = await c.openExport(vdi.$ref, { format: 'raw', signal: controller.signal })
      expect(raw.sizeBytes).toBe(1024 ** 4)
      // aborting a stream nobody reads: it errors with CancelledError, which its consumer must handle
      const failed = new Promise((resolve) => raw.stream.once('error', resolve))
      controller.abort()
      expect(await failed).toMatchObject({ code: 'E_CANCELLED' })
      await c.cancelTask(raw.taskRef)
    } finally {
      await c.close()
      await big.close()
    }
  })

  it('is deterministic from the seed', async () => {
    const a = await startXapiSimulator({ vms: 1, diskSizeBytes: 8 * MiB, disksPerVm: 1, fillRatio: 0.7, seed: 5 })
    const b = await startXapiSimulator({ vms: 1, diskSizeBytes: 8 * MiB, disksPerVm: 1, fillRatio: 0.7, seed: 5 })
    const c = await startXapiSimulator({ vms: 1, diskSizeBytes: 8 * MiB, disksPerVm: 1, fillRatio: 0.7, seed: 6 })
    try {
      const [va, vb, vc] = [a, b, c].map((s) => s.listVms()[0]!.vdis[0]!.uuid)
      expect(va).toBe(vb)
      const ha = await sha256(a.rawDiskContent(va!))
      expect(await sha256(b.rawDiskContent(vb!))).toBe(ha)
      expect(await sha256(c.rawDiskContent(vc!))).not.toBe(ha)
    } finally {
      await Promise.all([a.close(), b.close(), c.close()])
    }
  })
})

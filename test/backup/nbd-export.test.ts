/**
 * One disk exported by the stream-thread code (runDiskExport) over HTTP and over NBD (1 and 4
 * connections) from the same snapshot VDI: the VhdFiles are byte-identical, and qemu-img reads the same
 * content as the simulator's disk.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { planDiskRead } from '../../src/backup/nbd-plan.js'
import type { DiskExportInput } from '../../src/backup/ports.js'
import { backupXapi } from '../../src/backup/xapi-adapter.js'
import { XapiClient } from '../../src/xapi/client.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { qemuCompare, saveRaw, startSim, MiB } from './helpers/fixture.js'

let sim: XapiSimulator
let client: XapiClient
let dir: { path: string; remove: () => Promise<void> }

beforeAll(async () => {
  sim = await startSim({ vms: 1, seed: 31, diskSizeBytes: 48 * MiB, fillRatio: 0.5, nbd: {} })
  client = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  dir = await makeTempDir('bp-nbdx-')
})
afterAll(async () => {
  await client?.close()
  await sim?.close()
  await dir?.remove()
})

it('NBD (1 and 4 connections) writes the VhdFile the HTTP export writes, byte for byte', async () => {
  const xapi = backupXapi(client)
  const vm = sim.listVms()[0]!
  const snap = await client.snapshotVm(vm.ref, 'nbd-export test', { checkpoint: false })
  const [disk] = await xapi.listDisks(snap.$ref)
  const files: Record<string, string> = {}
  for (const [name, concurrency] of [['http', 0], ['nbd1', 1], ['nbd4', 4]] as const) {
    const input: DiskExportInput = {
      descriptor: await xapi.exportDescriptor(disk!.vdi.ref, {}),
      vdiUuid: disk!.vdi.uuid,
      targets: [{ id: 't', url: `file://${dir.path}`, options: {}, path: `${name}/disk.vhd`, directory: false, compression: 'none' }],
      maxExportRateBytesPerSecond: 0,
    }
    if (concurrency > 0) {
      const plan = await planDiskRead(xapi, { preferNbd: true, nbdConcurrency: concurrency, cbtDestroySnapshotData: false, snapshotRetention: 1 }, disk!, undefined)
      expect(plan.nbd).toBeDefined()
      input.nbd = plan.nbd!
    }
    const r = await runDiskExport(input, { signal: new AbortController().signal })
    expect(r.succeeded).toEqual(['t'])
    expect(r.transport).toBe(concurrency > 0 ? 'nbd' : 'http')
    if (concurrency > 0) expect(r.nbdConnections).toBe(concurrency)
    files[name] = join(dir.path, name, 'disk.vhd')
  }
  const http = await readFile(files.http!)
  expect((await readFile(files.nbd1!)).equals(http)).toBe(true)
  expect((await readFile(files.nbd4!)).equals(http)).toBe(true)
  const raw = join(dir.path, 'disk.raw')
  await saveRaw(sim, vm.vdis[0]!.uuid, raw)
  await qemuCompare(files.nbd4!, raw)
})

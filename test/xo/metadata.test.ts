/**
 * The metadata JSON and the snapshot tags we write, field for field against Xen Orchestra's own code:
 * XO's exportIncrementalVm (run by XO's XAPI client on the same simulator snapshot) gives the
 * vbds / vdis / vifs / vtpms records its IncrementalRemoteWriter puts in the metadata; the top-level
 * fields are those that writer sets, in its order; the snapshot and its VDIs carry the tags XO's
 * runner looks for when it chooses the base of its next delta.
 */
import { mkdir, readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { runBackup } from '../../src/backup/run.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, runTask, startSim } from '../backup/helpers/fixture.js'
import { xoExportIncrementalVm, xoXapi, type XoXapi } from './oracle.js'

// IncrementalRemoteWriter#_transfer's metadataContent, then tags and size (@xen-orchestra/backups 0.74)
const XO_DELTA_FIELDS = ['includeNonNbdQcow2Fix', 'isVhdDifferencing', 'jobId', 'mode', 'scheduleId', 'timestamp', 'vbds', 'vdis', 'version', 'vifs', 'vhds', 'vm', 'vmSnapshot', 'vtpms', 'tags', 'size']

let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }
let xapi: XoXapi

beforeAll(async () => {
  sim = await startSim({ disksPerVm: 2 })
  dir = await makeTempDir('bp-xo-meta-')
  xapi = await xoXapi(sim)
})
afterAll(async () => {
  await xapi?.disconnect()
  await sim?.close()
  await dir?.remove()
})

const json = (v: unknown): unknown => JSON.parse(JSON.stringify(v))
/** XO's records now carry the marks set after the metadata was written: remove them */
const beforeMarks = (records: Record<string, unknown>): unknown =>
  Object.fromEntries(Object.entries(json(records) as Record<string, { other_config: Record<string, string> }>).map(([ref, r]) => {
    const { 'xo:backup:deltaChainLength': _l, 'xo:backup:exported': _e, ...oc } = r.other_config
    return [ref, { ...r, other_config: oc }]
  }))

describe('metadata and snapshot tags as XO writes them', () => {
  it('a full then a delta: every field equals what XO builds from the same snapshot', async () => {
    const vm = sim.listVms()[0]!
    const root = join(dir.path, 'r')
    await mkdir(root)
    const task = runTask(sim, [vm.uuid], { r: `file://${root}` }, { exportRetention: 5, snapshotRetention: 2 })
    for (let i = 0; i < 2; i++) {
      if (i > 0) sim.writeBlocks(vm.uuid, { blocks: 2 })
      const s = await runBackup(task, { defaults, exporter: runDiskExport, signal: new AbortController().signal })
      expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
    }
    const vmDir = join(root, 'xo-vm-backups', vm.uuid)
    const names = (await readdir(vmDir)).filter((n) => n.endsWith('.json')).sort()
    const [full, delta] = await Promise.all(names.map(async (n) => JSON.parse(await readFile(join(vmDir, n), 'utf8')) as Record<string, unknown>))
    await xapi.barrier()

    for (const [m, base] of [[full!, undefined], [delta!, full!]] as const) {
      expect(Object.keys(m)).toEqual(XO_DELTA_FIELDS)
      expect(m).toMatchObject({ includeNonNbdQcow2Fix: true, jobId: 'job1', mode: 'delta', scheduleId: 'sched1', version: '2.0.0', vtpms: [], tags: [] })
      const snapshot = xapi.getObject(String((m.vmSnapshot as { uuid: string }).uuid))
      // XO's base VDIs: source VDI uuid → the base snapshot's VDI (what its runner passes)
      const baseVdis = Object.fromEntries(
        Object.values((base?.vdis ?? {}) as Record<string, { uuid: string; $snapshot_of$uuid: string }>).map((v) => [v.$snapshot_of$uuid, xapi.getObject(v.uuid)]),
      )
      const xo = await xoExportIncrementalVm(snapshot, baseVdis)
      try {
        expect(m.vbds).toEqual(json(xo.vbds))
        expect(m.vdis).toEqual(beforeMarks(xo.vdis))
        expect(m.vifs).toEqual(json(xo.vifs))
        expect(m.vtpms).toEqual(json(xo.vtpms))
        expect(Object.keys(m.isVhdDifferencing as object).sort()).toEqual(Object.keys(xo.disks).sort())
        for (const [ref, d] of Object.entries(xo.disks)) expect((m.isVhdDifferencing as Record<string, boolean>)[ref]).toBe(d.isDifferencing())
      } finally {
        await Promise.all(Object.values(xo.disks).map((d) => d.close()))
      }
      // vmSnapshot: the record when the metadata was written (before the chain length and exported marks)
      const { other_config: oc, ...rest } = json(snapshot) as { other_config: Record<string, string> }
      const { 'xo:backup:deltaChainLength': _l, 'xo:backup:exported': _e, ...ocBefore } = oc
      expect(m.vmSnapshot).toEqual({ ...rest, other_config: ocBefore })
      for (const vdi of Object.values(m.vdis as Record<string, { other_config: Record<string, string>; $SR$uuid: string }>)) {
        expect(vdi.$SR$uuid).toMatch(/^[0-9a-f-]{36}$/)
        if (base === undefined) expect(vdi.other_config['xo:base_delta_vdi']).toBeUndefined()
        else expect(vdi.other_config['xo:base_delta_vdi']).toMatch(/^[0-9a-f-]{36}$/)
      }
      for (const vif of Object.values(m.vifs as Record<string, Record<string, unknown>>)) {
        expect(vif).toMatchObject({ $network$name_label: 'Pool-wide network associated with eth0', $network$VLAN: -1 })
      }
    }

    // the pool side: the snapshot and its VDIs carry XO's tags (datetime in XAPI's format)
    const snap = xapi.getObject(String((delta!.vmSnapshot as { uuid: string }).uuid))
    const vdiUuids = Object.values(delta!.vdis as Record<string, { uuid: string }>).map((v) => v.uuid)
    for (const o of [snap, ...vdiUuids.map((u) => xapi.getObject(u))]) {
      expect(o.other_config).toMatchObject({
        'xo:backup:job': 'job1',
        'xo:backup:schedule': 'sched1',
        'xo:backup:vm': vm.uuid,
        'xo:backup:includeNonNbdQcow2Fix': 'true',
        'xo:backup:deltaChainLength': '1',
        'xo:backup:exported': 'true',
      })
    }
    for (const o of [snap, ...vdiUuids.map((u) => xapi.getObject(u))]) expect((o.other_config as Record<string, string>)['xo:backup:datetime']).toMatch(/^\d{8}T\d{2}:\d{2}:\d{2}Z$/)
    for (const u of vdiUuids) expect((xapi.getObject(u).other_config as Record<string, string>)['xo:backup:contentKey']).toBe(u)
  })
})

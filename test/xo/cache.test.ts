/**
 * cache.json.gz in Xen Orchestra's shape: after our backups, XO's RemoteAdapter lists them from our
 * cache exactly as from the cache it regenerates itself; a cache in our old format (no `_filename`/`id`,
 * which breaks XO's listing) is reported by verify, fixed by `verify --repair`, and rewritten by the
 * next backup run.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { gunzip, gzip } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { runBackup } from '../../src/backup/run.js'
import { verifyRemote } from '../../src/backup/verify.js'
import { createRemote } from '../../src/remotes/index.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, runTask, startSim } from '../backup/helpers/fixture.js'
import { xoAdapter } from './oracle.js'

let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }

beforeAll(async () => {
  sim = await startSim()
  dir = await makeTempDir('bp-xo-cache-')
})
afterAll(async () => {
  await sim?.close()
  await dir?.remove()
})

const readGz = async (path: string): Promise<Record<string, Record<string, unknown>>> =>
  JSON.parse((await promisify(gunzip)(await readFile(path))).toString('utf8')) as Record<string, Record<string, unknown>>

describe('cache.json.gz in XO shape', () => {
  it('XO lists our backups from our cache as from the cache it regenerates; the old format is reported, repaired, rewritten', async () => {
    const vm = sim.listVms()[0]!
    const root = join(dir.path, 'r')
    await mkdir(root)
    const task = runTask(sim, [vm.uuid], { r: `file://${root}` }, { exportRetention: 5 })
    const run = async () => {
      const s = await runBackup(task, { defaults, exporter: runDiskExport, signal: new AbortController().signal })
      expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
    }
    await run()
    sim.writeBlocks(vm.uuid, { blocks: 2 })
    await run()

    const cacheFile = join(root, 'xo-vm-backups', vm.uuid, 'cache.json.gz')
    const ours = await readGz(cacheFile)
    const { adapter, close } = await xoAdapter({ url: `file://${root}` })
    try {
      const fromOurs = await adapter.listVmBackups(vm.uuid)
      expect(fromOurs).toHaveLength(2)
      for (const b of fromOurs) {
        expect(b._filename).toMatch(new RegExp(`^/xo-vm-backups/${vm.uuid}/\\d{8}T\\d{6}Z\\.json$`))
        expect(b.id).toBe(b._filename)
      }
      // XO regenerates the cache when there is none: the same entries, field for field
      await rm(cacheFile)
      const regenerated = await adapter.listVmBackups(vm.uuid)
      expect(regenerated).toEqual(fromOurs)
      expect(await readGz(cacheFile)).toEqual(ours)
    } finally {
      await close()
    }

    // our old format: metadata path → metadata, without _filename / id
    const old = Object.fromEntries(Object.entries(ours).map(([k, v]) => {
      const { _filename: _f, id: _i, isImmutable: _m, ...rest } = v
      return [k, rest]
    }))
    await writeFile(cacheFile, await promisify(gzip)(JSON.stringify(old)))
    const remote = createRemote(`file://${root}`)
    await remote.open()
    try {
      const report = await verifyRemote(remote)
      expect(report.problems.map((p) => [p.kind, p.path])).toEqual([['cache', `xo-vm-backups/${vm.uuid}/cache.json.gz`]])
      expect(report.problems[0]!.message).toMatch(/old format.*_filename\/id/)
      const repaired = await verifyRemote(remote, { repair: true })
      expect(repaired.problems.map((p) => [p.kind, p.repaired])).toEqual([['cache', true]])
      expect(await readGz(cacheFile)).toEqual(ours)
      expect((await verifyRemote(remote)).problems).toEqual([])

      // a stale cache (one backup missing) is a problem too; the next run rewrites any bad cache
      const { [Object.keys(ours)[0]!]: _dropped, ...stale } = ours
      await writeFile(cacheFile, await promisify(gzip)(JSON.stringify(stale)))
      expect((await verifyRemote(remote)).problems.map((p) => p.message)).toEqual([expect.stringMatching(/lists 1 backup\(s\) but the remote holds 2/)])
      await writeFile(cacheFile, await promisify(gzip)(JSON.stringify(old)))
      sim.writeBlocks(vm.uuid, { blocks: 1 })
      await run()
      expect((await verifyRemote(remote)).problems).toEqual([])
      const after = await readGz(cacheFile)
      expect(Object.keys(after)).toHaveLength(3)
      for (const [k, v] of Object.entries(after)) expect(v).toMatchObject({ _filename: k, id: k })
    } finally {
      await remote.close()
    }
  })
})

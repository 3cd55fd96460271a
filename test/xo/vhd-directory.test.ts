/**
 * VhdDirectory as XO writes it: brotli by default (XO proxies' vhdDirectoryCompression), `none` on
 * request; always VhdDirectory on S3 (XO's S3 handler answers useVhdDirectory() true); the job's
 * `compression` keeps XO's meaning (XVA compression) and a VhdDirectory codec there is refused with a
 * coded error. XO's own RemoteAdapter (isMergeableParent: what its next run checks before chaining a
 * delta) accepts what we write; XO's listing shows it.
 */
import { mkdir, readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { runBackup } from '../../src/backup/run.js'
import { backupSchema } from '../../src/config/schema.js'
import { parseTask } from '../../src/queue/tasks.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { errorCode } from '../../src/common/errors.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, runTask, startSim } from '../backup/helpers/fixture.js'
import { patchRemoteParserForS3, xoAdapter, type XoRemoteAdapter } from './oracle.js'

const s3Url = inject('s3Url')
let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }

beforeAll(async () => {
  sim = await startSim({ vms: 3 })
  dir = await makeTempDir('bp-xo-vhddir-')
})
afterAll(async () => {
  await sim?.close()
  await dir?.remove()
})

const packUuid = (uuid: string): Buffer => Buffer.from(uuid.replace(/-/g, ''), 'hex')

/** Two runs (full, delta) of one VM; returns the newest backup as XO lists it. */
async function twoRuns(vmIndex: number, url: string, options: Record<string, unknown>, settings = defaults) {
  const vm = sim.listVms()[vmIndex]!
  const task = runTask(sim, [vm.uuid], { r: { url, options } }, { exportRetention: 5 }, `job-${vmIndex}`)
  for (let i = 0; i < 2; i++) {
    if (i > 0) sim.writeBlocks(vm.uuid, { blocks: 2 })
    const s = await runBackup(task, { defaults: settings, exporter: runDiskExport, signal: new AbortController().signal })
    expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
  }
  return vm
}

async function newestMergeable(adapter: XoRemoteAdapter, vmUuid: string): Promise<{ path: string; mergeable: boolean; differencing: boolean[] }> {
  const backups = await adapter.listVmBackups(vmUuid)
  expect(backups).toHaveLength(2)
  const newest = backups[1]!
  const [ref, rel] = Object.entries(newest.vhds!)[0]!
  const path = `/xo-vm-backups/${vmUuid}/${rel}`
  const vdi = newest.vdis![ref]!
  return { path, mergeable: await adapter.isMergeableParent(packUuid(String(vdi.uuid)), path), differencing: backups.map((b) => Object.values(b.isVhdDifferencing as Record<string, boolean>)[0]!) }
}

describe('settings', () => {
  it('vhdDirectoryCompression defaults to brotli; compression keeps XO\'s XVA meaning, a VhdDirectory codec there is refused', () => {
    expect(defaults.vhdDirectoryCompression).toBe('brotli')
    expect(defaults.compression).toBe('')
    expect(backupSchema.parse({ compression: 'zstd', vhdDirectoryCompression: 'none' })).toMatchObject({ compression: 'zstd', vhdDirectoryCompression: 'none' })
    expect(() => backupSchema.parse({ compression: 'brotli' })).toThrow(/XVA compression.*vhdDirectoryCompression/)
    expect(() => backupSchema.parse({ vhdDirectoryCompression: 'zstd' })).toThrow(/brotli.*none/)
    const task = (compression: string) => parseTask({
      kind: 'backup.run',
      job: { id: 'j', name: 'n', mode: 'delta', vms: { uuid: [sim.listVms()[0]!.uuid] }, settings: { '': { compression } } },
      schedule: { id: 's' },
      remotes: { r: { url: 'file:///tmp/x' } },
      xapis: { main: { url: sim.url, credentials: { username: 'u', password: 'p' } } },
    })
    expect(() => task('native')).not.toThrow()
    let error: unknown
    try {
      task('brotli')
    } catch (e) {
      error = e
    }
    expect(errorCode(error)).toBe('E_TASK_INVALID')
    expect((error as Error).message).toMatch(/vhdDirectoryCompression/)
  })
})

describe('VhdDirectory as XO writes it', () => {
  it('brotli by default: chunk-filters.json ["brotli"], XO would chain its next delta onto ours; none: no filters, XO (brotli) would not', async () => {
    const root = join(dir.path, 'local')
    await mkdir(root)
    const vm = await twoRuns(0, `file://${root}`, { useVhdDirectory: true })
    const { adapter, close } = await xoAdapter({ url: `file://${root}`, useVhdDirectory: true })
    try {
      const r = await newestMergeable(adapter, vm.uuid)
      expect(r.path).toMatch(/\.alias\.vhd$/)
      expect(r.differencing).toEqual([false, true])
      expect(r.mergeable).toBe(true)
      const dataDir = join(root, r.path.replace(/([^/]+)\.alias\.vhd$/, 'data/$1.vhd'))
      expect(JSON.parse(await readFile(join(dataDir, 'chunk-filters.json'), 'utf8'))).toEqual(['brotli'])
    } finally {
      await close()
    }

    const rootNone = join(dir.path, 'none')
    await mkdir(rootNone)
    const vm2 = await twoRuns(1, `file://${rootNone}`, { useVhdDirectory: true }, { ...defaults, vhdDirectoryCompression: 'none' })
    const xo = await xoAdapter({ url: `file://${rootNone}`, useVhdDirectory: true })
    try {
      const r = await newestMergeable(xo.adapter, vm2.uuid)
      expect(r.mergeable).toBe(false)
      const dataDir = join(rootNone, r.path.replace(/([^/]+)\.alias\.vhd$/, 'data/$1.vhd'))
      expect(await readdir(dataDir)).not.toContain('chunk-filters.json')
    } finally {
      await xo.close()
    }
  })

  it.skipIf(s3Url === null)('on S3 always VhdDirectory (no option), listed and chainable by XO\'s S3 handler', async () => {
    patchRemoteParserForS3()
    const url = `${s3Url!.replace(/#.*$/, '').replace(/\/?$/, '')}/vhddir${Date.now()}`
    const vm = await twoRuns(2, url, {})
    const { adapter, xo, close } = await xoAdapter({ url })
    try {
      expect(adapter.useVhdDirectory()).toBe(true)
      const r = await newestMergeable(adapter, vm.uuid)
      expect(r.path).toMatch(/\.alias\.vhd$/)
      expect(r.mergeable).toBe(true)
      const formatted = xo.formatVmBackups(await adapter.listAllVmBackups(), 'remote-s3')[vm.uuid]!
      expect(formatted.map((b) => [b.mode, b.differencingVhds, b.dynamicVhds])).toEqual([['delta', 0, 1], ['delta', 1, 0]])
    } finally {
      await close()
    }
  })
})

/**
 * Full backups (XO's `mode: 'full'`) end to end against the XAPI simulator and local remotes:
 * - a run writes `<ts>.xva` (zstd, as the job asks), XO's `<ts>.xva.checksum` (`$5$$<sha256>` or `$1$$<md5>`) and metadata
 *   with XO's FullRemoteWriter fields to two targets; nothing temporary is left;
 * - XO's own RemoteAdapter lists it, finds it a valid XVA, reads it back byte for byte, formats it;
 * - restoring it (importVmBackup's full branch) gives a VM whose disks equal the source at backup time,
 *   its progress rising to 100 % of the XVA;
 * - retention as XO (`exportRetention`): older full backups go with their XVA and checksum; the job's
 *   compression gives a gzip (`native`) or plain tar (`''`) XVA;
 * - an intact XVA whose checksum file disagrees is refused by our checksum check before XAPI has all of it,
 *   a corrupt XVA with E_XVA_CORRUPT (checksum file or, without one, XAPI's chunk checks); either way
 *   the pool keeps no VM or VDI of it;
 * - an XVA backup written by XO's code (its Xapi VM_export + RemoteAdapter.outputStream + metadata as
 *   FullRemoteWriter) is listed and restored by us; so is one written by XO's whole backup runner in full
 *   mode (createRunner → FullXapi → FullRemoteWriter, zstd), which our verify --full also accepts;
 * - the CLI's whole-VM restore (`restore --vm --at --sr --xapi`, password from a file) restores the full
 *   point `--at` names, the older of two, as the source was then; a corrupt point fails E_XVA_CORRUPT (exit 1).
 */
import { createHash } from 'node:crypto'
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listBackups } from '../../src/backup/catalog.js'
import { verifyRemote } from '../../src/backup/verify.js'
import { deleteVmBackups, listFormattedVmBackups } from '../../src/api/xo-backups.js'
import { importVmBackup } from '../../src/backup/import-vm-backup.js'
import { inlineImporter } from '../../src/backup/disk-import.js'
import { runBackup } from '../../src/backup/run.js'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { runCli } from '../../src/cli/program.js'
import { parseTask, type BackupRunTask } from '../../src/queue/tasks.js'
import { createRemote } from '../../src/remotes/index.js'
import type { Remote } from '../../src/remotes/remote.js'
import { XapiClient } from '../../src/xapi/client.js'
import { formatChecksum, resolveChecksumAlgorithm } from '../../src/xva/checksum.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, MiB, startSim } from '../backup/helpers/fixture.js'
import { loadXo, xoAdapter, xoHandler, xoXapi } from '../xo/oracle.js'

const require = createRequire(import.meta.url)

let sim: XapiSimulator
let xapi: XapiClient
let dir: { path: string; remove: () => Promise<void> }

function fullTask(vmUuid: string, settings: Record<string, unknown>, compression: '' | 'native' | 'zstd' = 'zstd'): BackupRunTask {
  return parseTask({
    kind: 'backup.run',
    job: { id: 'fulljob', name: 'full job', mode: 'full', compression, vms: { uuid: [vmUuid] }, settings: { '': settings } },
    schedule: { id: 'fullsched' },
    remotes: { a: { url: `file://${dir.path}/a` }, b: { url: `file://${dir.path}/b` } },
    xapis: { main: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
  }) as BackupRunTask
}

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex')
const sha = async (vdiUuid: string) => {
  const h = createHash('sha256')
  for await (const c of sim.rawDiskContent(vdiUuid)) h.update(c as Buffer)
  return h.digest('hex')
}

async function withRemote<T>(name: string, fn: (r: Remote) => Promise<T>): Promise<T> {
  const r = createRemote(`file://${dir.path}/${name}`)
  await r.open()
  try {
    return await fn(r)
  } finally {
    await r.close()
  }
}

async function restore(remoteName: string, metadataPath: string, srUuid: string, onProgress?: (p: { doneBytes?: number; totalBytes?: number; percent: number }) => void) {
  return withRemote(remoteName, (remote) =>
    importVmBackup({ remote, remoteSpec: { url: `file://${dir.path}/${remoteName}`, options: {} }, metadataPath, xapi, srUuid, importer: inlineImporter, signal: new AbortController().signal, ...(onProgress === undefined ? {} : { onProgress }) }),
  )
}

const counts = () => ({ vms: xapi.listVms({ includeSnapshots: true }).length, vdis: xapi.listVdis().length })

beforeAll(async () => {
  dir = await makeTempDir()
  await Promise.all(['a', 'b', 'x'].map((r) => mkdir(join(dir.path, r))))
  sim = await startSim({ disksPerVm: 2, diskSizeBytes: 8 * MiB, srs: 2, networks: 2 })
  xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
})
afterAll(async () => {
  await xapi.close()
  await sim.close()
  await dir.remove()
})

describe('full backup (XVA)', () => {
  const shasAt = new Map<string, string[]>()

  it('writes the XVA, its checksum and XO metadata to every target; XO lists, validates and reads it', async () => {
    const vm = sim.listVms()[0]!
    const s = await runBackup(fullTask(vm.uuid, { exportRetention: 2, snapshotRetention: 1 }), { defaults, exporter: runDiskExport, signal: new AbortController().signal })
    expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
    const ts = (s.tasks?.[0]?.result as { timestamp: string }).timestamp
    shasAt.set(ts, await Promise.all(vm.vdis.map((v) => sha(v.uuid))))
    for (const r of ['a', 'b']) {
      const vmDir = join(dir.path, r, 'xo-vm-backups', vm.uuid)
      expect((await readdir(vmDir)).sort()).toEqual([`${ts}.json`, `${ts}.xva`, `${ts}.xva.checksum`, 'cache.json.gz'])
      const xva = await readFile(join(vmDir, `${ts}.xva`))
      expect(xva.subarray(0, 4).toString('hex')).toBe('28b52ffd') // zstd, as the job asked
      // backup.xvaChecksum auto: SHA-256 where the CPU has SHA-256 instructions, else MD5 (test/xva/checksum.test.ts)
      const algorithm = resolveChecksumAlgorithm('auto')
      expect(await readFile(join(vmDir, `${ts}.xva.checksum`), 'utf8')).toBe(formatChecksum(algorithm, createHash(algorithm).update(xva).digest('hex')))
      const m = JSON.parse(await readFile(join(vmDir, `${ts}.json`), 'utf8')) as Record<string, unknown>
      expect(Object.keys(m)).toEqual(['jobId', 'mode', 'scheduleId', 'timestamp', 'version', 'vm', 'vmSnapshot', 'xva', 'size', 'tags'])
      expect(m).toMatchObject({ jobId: 'fulljob', mode: 'full', scheduleId: 'fullsched', version: '2.0.0', xva: `./${ts}.xva`, size: xva.length, tags: [] })
      expect((m.vm as { uuid: string }).uuid).toBe(vm.uuid)
      expect((m.vmSnapshot as { is_a_snapshot: boolean }).is_a_snapshot).toBe(true)

      const { adapter, close } = await xoAdapter({ url: `file://${dir.path}/${r}` })
      try {
        const listed = await adapter.listVmBackups(vm.uuid)
        expect(listed.map((b) => [b.mode, b._filename])).toEqual([['full', `/xo-vm-backups/${vm.uuid}/${ts}.json`]])
        const x = adapter as unknown as { isValidXva(p: string): Promise<boolean>; readFullVmBackup(m: unknown): Promise<AsyncIterable<Buffer>> }
        expect(await x.isValidXva(`xo-vm-backups/${vm.uuid}/${ts}.xva`)).toBe(true)
        const parts: Buffer[] = []
        for await (const c of await x.readFullVmBackup(listed[0])) parts.push(c)
        expect(md5(Buffer.concat(parts))).toBe(md5(xva))
      } finally {
        await close()
      }
    }
  }, 120_000)

  it('restores the XVA as a new VM whose disks equal the source at backup time', async () => {
    const vm = sim.listVms()[0]!
    sim.writeBlocks(vm.uuid, { blocks: 2 }) // the source moves on: the restore must give the backed-up content
    const [ts, shas] = [...shasAt][0]!
    const sr = xapi.listSrs().find((x) => x.name_label === 'Sim SR 1')!
    const reports: { doneBytes?: number; totalBytes?: number; percent: number }[] = []
    const r = await restore('a', `xo-vm-backups/${vm.uuid}/${ts}.json`, sr.uuid, (p) => reports.push(p))
    expect(r.vdis).toHaveLength(2)
    expect(reports.at(-1)).toEqual({ percent: 100, doneBytes: r.sizeBytes, totalBytes: r.sizeBytes })
    expect(await Promise.all(r.vdis.map((v) => sha(v.uuid)))).toEqual(shas)
    const ref = xapi.get('VM', r.restoredVmUuid).$ref
    const restored = (await xapi.call('VM.get_record', ref)) as { tags: string[]; name_label: string; other_config: Record<string, string> }
    expect(restored.tags).toContain('restored from backup')
    expect(restored.name_label).toMatch(/\(\d{8}T\d{6}Z\)$/)
    expect(Object.keys(restored.other_config).filter((k) => k.startsWith('xo:backup:'))).toEqual([])
    for (const d of xapi.vmDisks(ref)) expect(d.vdi.SR).toBe(sr.$ref)
  }, 120_000)

  it('keeps exportRetention full backups, removing the XVA and checksum of the others', async () => {
    const vm = sim.listVms()[0]!
    for (let i = 0; i < 2; i++) {
      if (i > 0) sim.writeBlocks(vm.uuid, { blocks: 2 }) // each point its own content (the CLI test restores an older one)
      const s = await runBackup(fullTask(vm.uuid, { exportRetention: 2, snapshotRetention: 1 }, i === 0 ? 'native' : ''), { defaults, exporter: runDiskExport, signal: new AbortController().signal })
      expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
      // the job's compression: `native` = gzip, `''` = a plain tar (its first member's ustar magic at 257)
      const ts = (s.tasks?.[0]?.result as { timestamp: string }).timestamp
      shasAt.set(ts, await Promise.all(vm.vdis.map((v) => sha(v.uuid))))
      const head = (await readFile(join(dir.path, 'a', 'xo-vm-backups', vm.uuid, `${ts}.xva`))).subarray(0, 512)
      if (i === 0) expect(head.subarray(0, 2).toString('hex')).toBe('1f8b')
      else expect(head.subarray(257, 262).toString('latin1')).toBe('ustar')
    }
    for (const r of ['a', 'b']) {
      const names = (await readdir(join(dir.path, r, 'xo-vm-backups', vm.uuid))).sort()
      expect(names.filter((n) => n.endsWith('.json'))).toHaveLength(2)
      expect(names.filter((n) => n.endsWith('.xva'))).toHaveLength(2)
      expect(names.filter((n) => n.endsWith('.xva.checksum'))).toHaveLength(2)
      expect(names.some((n) => n.startsWith([...shasAt.keys()][0]!))).toBe(false)
      const { adapter, close } = await xoAdapter({ url: `file://${dir.path}/${r}` })
      expect((await adapter.listVmBackups(vm.uuid)).map((b) => b.mode)).toEqual(['full', 'full'])
      await close()
    }
    // snapshotRetention 1: one backup snapshot of the job stays
    expect(xapi.listVms({ includeSnapshots: true }).filter((v) => v.is_a_snapshot && v.other_config['xo:backup:job'] === 'fulljob')).toHaveLength(1)
  }, 120_000)

  it('the API lists full backups as XO formats them and deletes one with its XVA and checksum', async () => {
    const vm = sim.listVms()[0]!
    const { adapter, xo, close } = await xoAdapter({ url: `file://${dir.path}/a` })
    try {
      const theirs = xo.formatVmBackups(await adapter.listAllVmBackups(), 'a')[vm.uuid]!
      await withRemote('a', async (remote) => {
        const ours = (await listFormattedVmBackups(remote, 'a', vm.uuid))[vm.uuid] as Record<string, unknown>[]
        for (const [i, b] of ours.entries()) expect(b).toMatchObject({ id: theirs[i]!.id, mode: 'full', size: theirs[i]!.size, timestamp: theirs[i]!.timestamp, disks: [] })
        const [oldest] = ours
        await deleteVmBackups(remote, [String(oldest!.id)])
        const names = await readdir(join(dir.path, 'a', 'xo-vm-backups', vm.uuid))
        const ts = String(oldest!.id).split('/').pop()!.replace('.json', '')
        expect(names.filter((n) => n.startsWith(ts))).toEqual([])
      })
      expect(await adapter.listVmBackups(vm.uuid)).toHaveLength(1)
    } finally {
      await close()
    }
  }, 120_000)

  it('refuses a corrupt XVA with E_XVA_CORRUPT and leaves nothing on the pool', async () => {
    const vm = sim.listVms()[0]!
    const [newest] = await withRemote('b', async (remote) => (await listBackups(remote, vm.uuid)).reverse())
    const xvaFile = join(dir.path, 'b', 'xo-vm-backups', vm.uuid, `${newest!.timestamp}.xva`)
    // an intact XVA whose checksum file disagrees: only our checksum check can refuse it (XAPI would import
    // it), and it does before XAPI has the whole archive — nothing imported
    const checksum = await readFile(`${xvaFile}.checksum`, 'utf8')
    await writeFile(`${xvaFile}.checksum`, `$1$$${'0'.repeat(32)}`)
    const intact = counts()
    const refused = await restore('b', newest!.metadataPath, xapi.listSrs()[0]!.uuid).then(() => undefined, (e: unknown) => e as { code?: string; message?: string })
    expect(refused?.code).toBe('E_XVA_CORRUPT')
    expect(refused?.message).toMatch(/its checksum file says \$1\$\$0{32}.*nothing was imported/)
    expect(counts()).toEqual(intact)
    await writeFile(`${xvaFile}.checksum`, checksum)
    const bytes = await readFile(xvaFile)
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01
    await writeFile(xvaFile, bytes)
    const report = await withRemote('b', (remote) => verifyRemote(remote, { vmUuid: vm.uuid, full: true }))
    expect(report.problems).toEqual([expect.objectContaining({ kind: 'data', path: `xo-vm-backups/${vm.uuid}/${newest!.timestamp}.xva` })])
    const before = counts()
    await expect(restore('b', newest!.metadataPath, xapi.listSrs()[0]!.uuid)).rejects.toMatchObject({ code: 'E_XVA_CORRUPT' })
    expect(counts()).toEqual(before)
    // without the checksum file XAPI's own chunk checks refuse it: still coded, still nothing left
    await writeFile(`${xvaFile}.checksum`, '')
    await expect(restore('b', newest!.metadataPath, xapi.listSrs()[0]!.uuid)).rejects.toMatchObject({ code: 'E_XVA_CORRUPT' })
    expect(counts()).toEqual(before)
  }, 120_000)

  it('lists and restores a full backup written by XO\'s own code', async () => {
    const vm = sim.listVms()[0]!
    const xo = await xoXapi(sim)
    const { adapter, close } = await xoAdapter({ url: `file://${dir.path}/x` })
    let metadataPath: string
    const snapshotRef = await xapi.snapshotVm(vm.ref, 'xo export').then((s) => s.$ref)
    const shas = await Promise.all(xapi.vmDisks(snapshotRef).map((d) => sha(d.vdi.uuid)))
    try {
      const x = xo as unknown as { VM_export(ref: string, o: Record<string, unknown>): Promise<{ body: NodeJS.ReadableStream }> }
      const { body } = await x.VM_export(snapshotRef, { compress: 'gzip', useSnapshot: false })
      const ts = '20260101T000000Z'
      const a = adapter as unknown as { outputStream(p: string, s: unknown, o: Record<string, unknown>): Promise<number>; isValidXva(p: string): Promise<boolean> }
      const size = await a.outputStream(`xo-vm-backups/${vm.uuid}/${ts}.xva`, body, { validator: (p: string) => a.isValidXva(p) })
      // FullRemoteWriter's metadata
      metadataPath = await adapter.writeVmBackupMetadata(vm.uuid, {
        jobId: 'xojob', mode: 'full', scheduleId: 'xosched', timestamp: Date.UTC(2026, 0, 1), version: '2.0.0',
        vm: xapi.get('VM', vm.ref), vmSnapshot: xapi.get('VM', snapshotRef), xva: `./${ts}.xva`, size, tags: [],
      })
    } finally {
      await close()
      await xo.disconnect()
    }
    const listed = await withRemote('x', (remote) => listBackups(remote, vm.uuid))
    expect(listed.map((b) => [b.metadata.mode, b.metadata.xva])).toEqual([['full', './20260101T000000Z.xva']])
    const r = await restore('x', metadataPath.replace(/^\//, ''), xapi.listSrs()[0]!.uuid)
    expect(await Promise.all(r.vdis.map((v) => sha(v.uuid)))).toEqual(shas)
  }, 120_000)

  it('lists, verifies and restores what XO\'s own backup runner wrote in full mode (its FullRemoteWriter)', async () => {
    const vm = sim.listVms()[0]!
    await mkdir(join(dir.path, 'xr'))
    const remote = { url: `file://${dir.path}/xr` }
    const xo = await loadXo()
    const handler = await xoHandler(remote)
    const xoApi = await xoXapi(sim)
    const { createRunner } = (await import('@xen-orchestra/backups/Backup.mjs')) as { createRunner: (o: unknown) => { run(): Promise<unknown> } }
    const { Task } = require('@vates/task') as { Task: { run(o: unknown, fn: () => Promise<unknown>): Promise<unknown> } }
    const Disposable = require('promise-toolbox/Disposable') as new (dispose: () => void, value: unknown) => unknown
    const ends: { status: string }[] = []
    let shas: string[]
    try {
      const adapter = new xo.RemoteAdapter(handler, {})
      const runner = createRunner({
        config: { snapshotNameLabelTpl: '[XO Backup {job.name}] {vm.name_label}', defaultSettings: {}, vm: { defaultSettings: {} } },
        getAdapter: () => Promise.resolve(new Disposable(() => undefined, adapter)),
        getConnectedRecord: async (type: string, uuid: string) => new Disposable(() => undefined, await xoApi.getRecordByUuid(type, uuid)),
        job: { id: 'xofull', type: 'backup', mode: 'full', compression: 'zstd', name: 'xo full', vms: { id: vm.uuid }, remotes: { id: 'r' }, settings: { '': { exportRetention: 2, snapshotRetention: 1 } } },
        schedule: { id: 'xosched' },
        remotes: { r: remote },
      })
      await Task.run({ properties: { name: 'backup run' }, onProgress: (e: { type: string; status: string }) => void (e.type === 'end' && ends.push(e)) }, () => runner.run())
      shas = await Promise.all(vm.vdis.map((v) => sha(v.uuid))) // the source as XO's run exported it
    } finally {
      await xoApi.disconnect()
      await handler.forget()
    }
    expect(ends.length).toBeGreaterThan(0)
    expect(ends.filter((e) => e.status !== 'success')).toEqual([])
    sim.writeBlocks(vm.uuid, { blocks: 2 })
    const listed = await withRemote('xr', (r) => listBackups(r, vm.uuid))
    expect(listed.map((b) => [b.metadata.mode, b.metadata.jobId])).toEqual([['full', 'xofull']])
    const xva = await readFile(join(dir.path, 'xr', 'xo-vm-backups', vm.uuid, String(listed[0]!.metadata.xva).replace('./', '')))
    expect(xva.subarray(0, 4).toString('hex')).toBe('28b52ffd')
    expect((await withRemote('xr', (r) => verifyRemote(r, { vmUuid: vm.uuid, full: true }))).problems).toEqual([])
    const r = await restore('xr', listed[0]!.metadataPath, xapi.listSrs()[1]!.uuid)
    expect(await Promise.all(r.vdis.map((v) => sha(v.uuid)))).toEqual(shas!)
  }, 120_000)

  it('restores a full point from the CLI (restore --vm --at --sr --xapi), the older of two, and refuses a corrupt one', async () => {
    const vm = sim.listVms()[0]!
    const sr = xapi.listSrs()[1]!
    // remote b keeps two points: the older is intact, the newer was corrupted above
    const [older, newer] = await withRemote('b', (remote) => listBackups(remote, vm.uuid))
    expect(shasAt.get(older!.timestamp)).not.toEqual(shasAt.get(newer!.timestamp))
    const passwordFile = join(dir.path, 'xapi-password')
    await writeFile(passwordFile, `${sim.password}\n`)
    const cli = async (at: string) => {
      let out = ''
      let err = ''
      const io = { stdout: (t: string) => void (out += t), stderr: (t: string) => void (err += t), isTTY: false }
      const args = ['restore', `file://${dir.path}/b`, '--vm', vm.uuid, '--at', at, '--sr', sr.uuid, '--xapi', sim.url.replace('://', `://${sim.user}@`), '--xapi-password-file', passwordFile, '--json']
      return { code: await runCli(args, io), out, err }
    }
    const ok = await cli(older!.timestamp)
    expect(ok.code, ok.err).toBe(0)
    const r = JSON.parse(ok.out) as { timestamp: string; vmUuid: string; restoredVmUuid: string; srUuid: string; vdis: { uuid: string }[] }
    expect(r).toMatchObject({ timestamp: older!.timestamp, vmUuid: vm.uuid, srUuid: sr.uuid })
    expect(await Promise.all(r.vdis.map((v) => sha(v.uuid)))).toEqual(shasAt.get(older!.timestamp))
    for (const d of xapi.vmDisks(xapi.get('VM', r.restoredVmUuid).$ref)) expect(d.vdi.SR).toBe(sr.$ref)
    const before = counts()
    const refused = await cli(newer!.timestamp)
    expect(refused.code).toBe(1)
    expect(refused.err).toMatch(/\[E_XVA_CORRUPT\]/)
    expect(counts()).toEqual(before)
  }, 120_000)
})

/**
 * NBD and CBT end to end through the queue (EnqueueClient → BullMQ → ProxyRuntime → Piscina disk
 * threads → simulator with its NBD server over TLS → local remotes): a full then 3 CBT deltas over NBD
 * with 2 connections, restores equal to the simulator's disk at each point; the same with the snapshot
 * data destroyed after each run (cbtDestroySnapshotData), and held back while a target failed for the
 * VM; then each fallback: no NBD network, unreachable server, TLS mismatch (HTTP export, warning), a
 * reset on every connection (the run fails E_NBD_READ, never a short disk), a changed-block list of the
 * wrong length and a broken CBT chain on a data-destroyed base (full, reason logged); CBT unusable on a
 * base that kept its data (a delta as before: blocks listed by the HTTP export, read over NBD, or over
 * HTTP when NBD is unreachable). Every point is restored by our code and, from its VHD chain, by Xen
 * Orchestra's vhd-lib.
 */
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join, posix } from 'node:path'
import type { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { listBackups } from '../../src/backup/catalog.js'
import { restoreDiskToFile } from '../../src/backup/restore.js'
import { verifyRemote } from '../../src/backup/verify.js'
import type { JobSummary } from '../../src/queue/task-log.js'
import type { TaskInputOf } from '../../src/queue/tasks.js'
import { createRemote } from '../../src/remotes/index.js'
import type { XapiClient } from '../../src/xapi/client.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { execFileAsync, qemuCompare, saveRaw, MiB } from './helpers/fixture.js'
import { startQueueHarness, type QueueHarness } from './helpers/queue-harness.js'

// Xen Orchestra's vhd-lib (through its @xen-orchestra/fs handler) reads every chain we wrote over NBD
interface XoHandler {
  sync(): Promise<void>
  forget(): Promise<void>
}
interface LibVhd {
  footer: { currentSize: number }
  readBlockAllocationTable(): Promise<void>
  rawContent(): Readable
}
const require = createRequire(import.meta.url)
const { getHandler } = require('@xen-orchestra/fs') as { getHandler: (remote: { url: string }) => XoHandler }
const vhdLib = require('vhd-lib') as { VhdSynthetic: { fromVhdChain(handler: XoHandler, path: string): Promise<{ value: LibVhd; dispose: () => unknown }> } }

async function vhdLibRaw(url: string, path: string): Promise<Buffer> {
  const handler = getHandler({ url })
  await handler.sync()
  const d = await vhdLib.VhdSynthetic.fromVhdChain(handler, path)
  try {
    await d.value.readBlockAllocationTable()
    const chunks: Buffer[] = []
    for await (const c of d.value.rawContent()) chunks.push(c as Buffer)
    return Buffer.concat(chunks).subarray(0, d.value.footer.currentSize)
  } finally {
    await d.dispose()
    await handler.forget()
  }
}

let sim: XapiSimulator
let xapi: XapiClient
let dir: QueueHarness['dir']
let harness: QueueHarness
let otherCert: string

async function keyPair(dirPath: string, name: string): Promise<{ key: Buffer; cert: Buffer }> {
  const key = join(dirPath, `${name}.key`)
  const cert = join(dirPath, `${name}.pem`)
  await execFileAsync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=xapi-sim host', '-keyout', key, '-out', cert])
  return { key: await readFile(key), cert: await readFile(cert) }
}

type Remotes = Record<string, { url: string; options?: { useVhdDirectory?: boolean } }>
function task(jobId: string, vm: string, remotes: Remotes, settings: Record<string, number | boolean>): TaskInputOf<'backup.run'> {
  return {
    kind: 'backup.run',
    job: { id: jobId, name: jobId, mode: 'delta', vms: { uuid: [vm] }, settings: { '': settings } },
    schedule: { id: 's1' },
    remotes,
    xapis: { sim: harness.xapiRef() },
  }
}

const vmTask = (s: JobSummary) => s.tasks?.[0]
const vmResult = (s: JobSummary) => vmTask(s)?.result as { timestamp: string; full: boolean; succeeded: string[]; failed: string[] }
const messages = (s: JobSummary, kind: 'infos' | 'warnings'): string[] => (vmTask(s)?.[kind] ?? []).map((e) => e.message)

const run = (jobId: string, vm: string, remotes: Remotes, settings: Record<string, number | boolean>): Promise<JobSummary> => harness.run(task(jobId, vm, remotes, settings))

/** Restores every backup of the VM's disk on each remote and compares with the raw content saved at its time. */
async function checkRestores(remotes: Remotes, vmUuid: string, vdiUuid: string, rawAt: Map<string, string>): Promise<void> {
  for (const [id, r] of Object.entries(remotes)) {
    const remote = createRemote(r.url, r.options ?? {})
    await remote.open()
    try {
      const backups = await listBackups(remote, vmUuid)
      expect(backups.map((b) => b.timestamp), id).toEqual([...rawAt.keys()])
      expect((await verifyRemote(remote, { vmUuid, full: true })).problems, id).toEqual([])
      for (const b of backups) {
        const out = join(dir.path, `restored-${id}-${b.timestamp}.raw`)
        await restoreDiskToFile(remote, { vmUuid, vdiUuid, at: b.timestamp }, out)
        const raw = await readFile(rawAt.get(b.timestamp)!)
        expect((await readFile(out)).equals(raw), `${id} ${b.timestamp}`).toBe(true)
        const vhds = Object.values(b.raw.vhds as Record<string, string>)
        expect(vhds).toHaveLength(1)
        const xo = await vhdLibRaw(r.url, posix.join(posix.dirname(b.metadataPath), vhds[0]!))
        expect(xo.equals(raw), `vhd-lib ${id} ${b.timestamp}`).toBe(true)
      }
    } finally {
      await remote.close()
    }
  }
}

beforeAll(async () => {
  const simOptions = async (dirPath: string) => {
    const tls = await keyPair(dirPath, 'host')
    otherCert = (await keyPair(dirPath, 'other')).cert.toString()
    return { vms: 5, seed: 2121, diskSizeBytes: 32 * MiB, nbd: { tls } }
  }
  harness = await startQueueHarness({ redisUrl: inject('redisUrl'), proxyId: 'nbd-proxy', dirPrefix: 'bp-nbdq-', sim: simOptions })
  ;({ sim, xapi, dir } = harness)
})
afterAll(() => harness?.close())

async function chain(vmIndex: number, jobId: string, settings: Record<string, number | boolean>, check: (s: JobSummary, i: number) => Promise<void>): Promise<void> {
  const vm = sim.listVms()[vmIndex]!
  const vdi = vm.vdis[0]!
  await xapi.call('VDI.enable_cbt', vdi.ref)
  const remotes: Remotes = { file: { url: `file://${dir.path}/${jobId}-f` }, dirs: { url: `file://${dir.path}/${jobId}-d`, options: { useVhdDirectory: true } } }
  for (const r of Object.values(remotes)) await execFileAsync('mkdir', ['-p', r.url.slice('file://'.length)])
  const rawAt = new Map<string, string>()
  for (let i = 0; i < 4; i++) {
    if (i > 0) sim.writeBlocks(vm.uuid, { blocks: 2 + i })
    const s = await run(jobId, vm.uuid, remotes, settings)
    expect(s.status, JSON.stringify(s.tasks, null, 1)).toBe('success')
    const r = vmResult(s)
    expect(r.full).toBe(i === 0)
    expect(r.succeeded).toEqual(['dirs', 'file'])
    expect(messages(s, 'infos').some((m) => m.startsWith('Transfer data using NBD') && m.includes('2 connections'))).toBe(true)
    if (i > 0) expect(messages(s, 'infos').some((m) => m.includes('delta from CBT'))).toBe(true)
    expect(messages(s, 'warnings')).toEqual([])
    const raw = join(dir.path, `raw-${jobId}-${r.timestamp}`)
    await saveRaw(sim, vdi.uuid, raw)
    rawAt.set(r.timestamp, raw)
    await check(s, i)
  }
  await checkRestores(remotes, vm.uuid, vdi.uuid, rawAt)
  // an independent reader of the full: qemu-img compares the VhdFile with the disk at that time
  const files = await execFileAsync('find', [`${dir.path}/${jobId}-f`, '-name', '*.vhd'])
  const first = files.stdout.trim().split('\n').sort()[0]!
  await qemuCompare(first, [...rawAt.values()][0]!)
}

/** The job's snapshots as the simulator has them now (the client's cache follows events and may lag). */
async function jobSnapshots(jobId: string): Promise<string[]> {
  const vms = (await xapi.call('VM.get_all_records')) as Record<string, { uuid: string; is_a_snapshot: boolean; other_config: Record<string, string> }>
  return Object.values(vms).filter((v) => v.is_a_snapshot && v.other_config['xo:backup:job'] === jobId).map((v) => v.uuid)
}

// real work bound by CPU, not waits: each test makes four backup runs over NBD and restores each point;
// beside two CPU burners (load 25 on 2 cores) the first one took over the suite's 60 s (its siblings up
// to 46 s), so the bound is 5 minutes
describe('NBD + CBT through the queue', { timeout: 300_000 }, () => {
  it('full then 3 CBT deltas over NBD (TLS, 2 connections): restores equal the disk at each point', async () => {
    await chain(0, 'nbd-keep', { preferNbd: true, nbdConcurrency: 2 }, async () => {
      const snaps = await jobSnapshots('nbd-keep')
      expect(snaps).toHaveLength(1)
    })
  })

  it('the same with the snapshot data destroyed after each run (cbtDestroySnapshotData)', async () => {
    await chain(1, 'nbd-purge', { preferNbd: true, nbdConcurrency: 2, cbtDestroySnapshotData: true }, async (s) => {
      expect(messages(s, 'infos')).toContain('Snapshot data has been deleted')
      expect(await jobSnapshots('nbd-purge')).toEqual([])
      const vdis = (await xapi.call('VDI.get_all_records')) as Record<string, { type: string; other_config: Record<string, string> }>
      const meta = Object.values(vdis).filter((v) => v.other_config['xo:backup:job'] === 'nbd-purge')
      expect(meta.map((v) => v.type)).toEqual(['cbt_metadata'])
    })
  })

  it('fallbacks: no NBD network, unreachable, TLS mismatch → HTTP with a warning; reset on every connection → E_NBD_READ; bad CBT list / broken chain on a purged base → full', async () => {
    const vm = sim.listVms()[2]!
    const vdi = vm.vdis[0]!
    await xapi.call('VDI.enable_cbt', vdi.ref)
    const remotes: Remotes = { file: { url: `file://${dir.path}/fb` } }
    await execFileAsync('mkdir', ['-p', `${dir.path}/fb`])
    const settings = { preferNbd: true, nbdConcurrency: 2, cbtDestroySnapshotData: true }
    const rawAt = new Map<string, string>()
    const ok = async (expectFull: boolean, warning: RegExp | undefined): Promise<void> => {
      sim.writeBlocks(vm.uuid, { blocks: 2 })
      const s = await run('fb', vm.uuid, remotes, settings)
      expect(s.status, JSON.stringify(s.tasks, null, 1)).toBe('success')
      expect(vmResult(s).full).toBe(expectFull)
      if (warning === undefined) expect(messages(s, 'warnings')).toEqual([])
      else expect(messages(s, 'warnings').some((m) => warning.test(m)), JSON.stringify(messages(s, 'warnings'))).toBe(true)
      const raw = join(dir.path, `raw-fb-${vmResult(s).timestamp}`)
      await saveRaw(sim, vdi.uuid, raw)
      rawAt.set(vmResult(s).timestamp, raw)
    }
    const network = ((await xapi.call('network.get_all')) as string[])[0]!
    await xapi.call('network.remove_purpose', network, 'nbd')
    // no NBD: an HTTP full; its data is destroyed after (XO: preferNbd, not the transport, gates it), so
    // each later fallback to HTTP is a full (no base data for an HTTP delta), with the reason
    await ok(true, /can't connect through NBD \(no network of the pool has the nbd or insecure_nbd purpose\)/)
    await xapi.call('network.add_purpose', network, 'nbd')
    sim.setNbdFault({ kind: 'unreachable' })
    await ok(true, /E_NBD_UNREACHABLE.*fall back to the HTTP export as a full/)
    sim.clearNbdFaults()
    sim.setNbdFault({ kind: 'tls-mismatch', cert: otherCert })
    await ok(true, /E_NBD_TLS/)
    sim.clearNbdFaults()
    sim.setNbdFault({ kind: 'reset', afterBytes: 512 * 1024 })
    sim.writeBlocks(vm.uuid, { blocks: 2 })
    const failed = await run('fb', vm.uuid, remotes, settings)
    expect(failed.status).toBe('failure')
    expect(JSON.stringify(failed)).toContain('E_NBD_READ')
    sim.clearNbdFaults()
    // a CBT delta over NBD works again
    await ok(false, undefined)
    // CBT problems on a data-destroyed base give a full with the reason
    sim.setCbtBadBitmapLength(1)
    await ok(true, /full backup of disk .*CBT is unusable \(VDI.list_changed_blocks answered \d+ bytes/)
    sim.resetCbtChain(vdi.uuid)
    await ok(true, /full backup of disk .*CBT is unusable \(.*SR_BACKEND_FAILURE_460/)
    await checkRestores(remotes, vm.uuid, vdi.uuid, rawAt)
  })

  it('cbtDestroySnapshotData: no purge while a target failed for the VM; the next run that reaches every target purges', async () => {
    const vm = sim.listVms()[4]!
    const vdi = vm.vdis[0]!
    await xapi.call('VDI.enable_cbt', vdi.ref)
    await execFileAsync('mkdir', ['-p', `${dir.path}/pg`])
    // a remote where the disk's directory is a regular file: the run's checks pass, the disk's export fails
    await execFileAsync('mkdir', ['-p', `${dir.path}/pg-broken/xo-vm-backups/${vm.uuid}/vdis/nbd-pg`])
    await execFileAsync('touch', [`${dir.path}/pg-broken/xo-vm-backups/${vm.uuid}/vdis/nbd-pg/${vdi.uuid}`])
    const settings = { preferNbd: true, nbdConcurrency: 2, cbtDestroySnapshotData: true }
    const vdiTypes = async (): Promise<string[]> => {
      const vdis = (await xapi.call('VDI.get_all_records')) as Record<string, { type: string; other_config: Record<string, string> }>
      return Object.values(vdis).filter((v) => v.other_config['xo:backup:job'] === 'nbd-pg').map((v) => v.type)
    }
    const partial = await run('nbd-pg', vm.uuid, { good: { url: `file://${dir.path}/pg` }, broken: { url: `file://${dir.path}/pg-broken` } }, settings)
    expect([vmResult(partial).succeeded, vmResult(partial).failed], JSON.stringify(partial.tasks, null, 1)).toEqual([['good'], ['broken']])
    expect(messages(partial, 'infos')).not.toContain('will delete snapshot data')
    expect(await jobSnapshots('nbd-pg')).toHaveLength(1)
    expect(await vdiTypes()).not.toContain('cbt_metadata')
    const ok = await run('nbd-pg', vm.uuid, { good: { url: `file://${dir.path}/pg` } }, settings)
    expect(ok.status, JSON.stringify(ok.tasks, null, 1)).toBe('success')
    expect(messages(ok, 'infos')).toContain('Snapshot data has been deleted')
    expect(await jobSnapshots('nbd-pg')).toEqual([])
    expect(await vdiTypes()).toEqual(['cbt_metadata'])
  })

  it('CBT unusable on a base that kept its data: a delta as before (blocks listed by the HTTP export), over NBD, or over HTTP when NBD is unreachable', async () => {
    const vm = sim.listVms()[3]!
    const vdi = vm.vdis[0]!
    await xapi.call('VDI.enable_cbt', vdi.ref)
    const remotes: Remotes = { file: { url: `file://${dir.path}/nocbt` } }
    await execFileAsync('mkdir', ['-p', `${dir.path}/nocbt`])
    const settings = { preferNbd: true, nbdConcurrency: 2 }
    const rawAt = new Map<string, string>()
    const step = async (expectFull: boolean, nbd: boolean, info: RegExp | undefined, warning: RegExp | undefined): Promise<void> => {
      sim.writeBlocks(vm.uuid, { blocks: 3 })
      const s = await run('nocbt', vm.uuid, remotes, settings)
      expect(s.status, JSON.stringify(s.tasks, null, 1)).toBe('success')
      expect(vmResult(s).full).toBe(expectFull)
      const infos = messages(s, 'infos')
      expect(infos.some((m) => m.startsWith('Transfer data using NBD')), JSON.stringify(infos)).toBe(nbd)
      if (info !== undefined) expect(infos.some((m) => info.test(m)), JSON.stringify(infos)).toBe(true)
      if (warning === undefined) expect(messages(s, 'warnings')).toEqual([])
      else expect(messages(s, 'warnings').some((m) => warning.test(m)), JSON.stringify(messages(s, 'warnings'))).toBe(true)
      const raw = join(dir.path, `raw-nocbt-${vmResult(s).timestamp}`)
      await saveRaw(sim, vdi.uuid, raw)
      rawAt.set(vmResult(s).timestamp, raw)
    }
    await step(true, true, undefined, undefined)
    // CBT disabled on the disk: the next snapshot is not tracked; its base kept its data
    await xapi.call('VDI.disable_cbt', vdi.ref)
    await step(false, true, /CBT is unusable \(CBT is disabled on the disk\), the delta's blocks are listed by the HTTP export/, undefined)
    sim.setNbdFault({ kind: 'unreachable' })
    await step(false, false, /CBT is unusable/, /E_NBD_UNREACHABLE.*fall back to the HTTP export$/)
    sim.clearNbdFaults()
    await checkRestores(remotes, vm.uuid, vdi.uuid, rawAt)
  })
})

/**
 * Xen Orchestra driving this proxy through the API, as xo-server does (test/api/xo-client.ts), with the
 * real queue, proxies and XAPI simulator: `serve` with the API runs a backup job built from the XO
 * fixture and streams XO's task log to the end (checked the way XO's makeOnProgress consolidates it),
 * `backup.listVmBackups` lists the result in XO's shape, a second run of the same job is refused while
 * the first one runs, `task.cancel` interrupts it, `backup.deleteVmBackup` removes a backup; a full
 * (XVA) backup of XO's job is restored through `backup.importVmBackup` exactly as xo-server calls it
 * (streamLogs: its root `restore` task carries the backup's jobId and ends with XO's `{size, id}`), can be
 * cancelled, and one whose checksum file disagrees fails E_XVA_CORRUPT leaving nothing on the pool; two
 * proxies of one pool behind one API share a batch of jobs; and the token is in no log, metric or Redis value.
 *
 * Runs that must still be running when the test acts on them are held by the simulator's `stall` fault
 * (holdExport: the export stops until the client goes away; an XVA restore's upload stops until its
 * XAPI task is cancelled), never by timing.
 */
import { createHash, randomUUID } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import type { RunningApi } from '../../src/api/index.js'
import { compileConfig } from '../../src/config/index.js'
import type { Observability } from '../../src/metrics/index.js'
import { builtinProcessors } from '../../src/workers/builtin-processors.js'
import { ProxyRuntime } from '../../src/workers/proxy.js'
import { serve } from '../../src/workers/serve.js'
import { silentLogger } from '../../src/common/log.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { readFile } from 'node:fs/promises'
import { restoreDiskToFile } from '../../src/backup/restore.js'
import { verifyRemote } from '../../src/backup/verify.js'
import { createRemote } from '../../src/remotes/index.js'
import { XapiClient } from '../../src/xapi/client.js'
import { makeTempDir } from '../helpers/tmp.js'
import { saveRaw, startSim, MiB } from '../backup/helpers/fixture.js'
import { FIXTURE_REMOTE_ID, FIXTURE_SCHEDULE_ID, xoRunParams } from './fixture.js'
import { apiConfig, apiFixture, capturedLogger, type ApiFixture, type CapturedLogger } from './helpers.js'
import { XoJsonRpcError, XoProxyClient } from './xo-client.js'

const redisUrl = inject('redisUrl')
let sim: XapiSimulator
let simSrUuid: string
let dir: { path: string; remove: () => Promise<void> }
let f: ApiFixture
let log: CapturedLogger
let api: RunningApi
let observability: Observability
let runtime: ProxyRuntime
let served: Promise<number>
let client: XoProxyClient

type XoEvent = { type: string; id: string; parentId?: string; properties?: Record<string, unknown>; status?: string; message?: string; data?: Record<string, unknown>; result?: unknown }

/** Consolidates events as XO's makeOnProgress does, failing on what it would assert on. */
function consolidate(events: readonly XoEvent[]): { root: Record<string, unknown> & { tasks?: unknown[] }; byId: Map<string, Record<string, unknown>> } {
  const byId = new Map<string, Record<string, unknown> & { tasks?: unknown[] }>()
  let root: (Record<string, unknown> & { tasks?: unknown[] }) | undefined
  for (const e of events) {
    if (e.type === 'start') {
      const t = { id: e.id, properties: e.properties, status: 'pending' as string }
      byId.set(e.id, t)
      if (e.parentId === undefined) {
        expect(root).toBeUndefined()
        root = t
      } else {
        const parent = byId.get(e.parentId)
        expect(parent, `parent ${e.parentId} of ${e.id}`).toBeDefined()
        ;(parent!.tasks ??= []).push(t)
      }
    } else {
      const t = byId.get(e.id)
      expect(t, `task ${e.id} of a ${e.type} event`).toBeDefined()
      if (e.type === 'end') Object.assign(t!, { status: e.status, result: e.result })
    }
  }
  expect(root).toBeDefined()
  return { root: root!, byId }
}

function params(job: string, vm: string, remoteDir: string): Record<string, unknown> {
  // the fixture's schedule asks for a health check on an SR: the simulator's (the check restores, boots and destroys the VM)
  return xoRunParams({ job, vm, remoteUrl: `file://${remoteDir}`, xapiUrl: sim.url, xapiUser: sim.user, xapiPassword: sim.password, healthCheckSr: simSrUuid })
}

/**
 * Holds the next run that exports this disk (or its snapshot) at its transfer until the run is cancelled:
 * the simulator's export stalls after the 512-byte footer copy that starts every VHD export. A stall
 * deeper in the body would depend on the disk's content, which the simulator's seed decides: with the
 * fixture's seed the disk of sim-vm-2 is empty (a 2,560-byte export), so a stall after 1 MiB never fired
 * there, the run ended on its own and raced the test's task.cancel.
 */
function holdExport(vdiUuid: string): void {
  sim.setFault({ kind: 'stall', afterBytes: 512, vdiUuid, times: 1 })
}

async function stream(p: Record<string, unknown>): Promise<AsyncGenerator<unknown>> {
  return (await client.call('backup.run', p, { assertType: 'iterator' })) as AsyncGenerator<unknown>
}

/** Reads a run's events until `until` matches one (returned with all read so far). */
async function readUntil(it: AsyncGenerator<unknown>, seen: XoEvent[], until: (e: XoEvent) => boolean): Promise<void> {
  for (;;) {
    const n = await it.next()
    if (n.done === true) throw new Error('the stream ended before the awaited event')
    seen.push(n.value as XoEvent)
    if (until(n.value as XoEvent)) return
  }
}

async function drain(it: AsyncGenerator<unknown>, seen: XoEvent[]): Promise<XoEvent[]> {
  for await (const e of { [Symbol.asyncIterator]: () => it }) seen.push(e as XoEvent)
  return seen
}

beforeAll(async () => {
  sim = await startSim({ vms: 6, disksPerVm: 1, diskSizeBytes: 8 * MiB, fillRatio: 0.5 })
  const probe = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  try {
    simSrUuid = probe.get('SR', probe.get('VDI', sim.listVms()[0]!.vdis[0]!.uuid).SR).uuid
  } finally {
    await probe.close()
  }
  dir = await makeTempDir('bp-api-xo-')
  f = await apiFixture()
  log = capturedLogger()
  const config = apiConfig(f, redisUrl, join(dir.path, 'state'))
  const ready = new Promise<void>((resolve) => {
    served = serve({
      config: { ...config, http: { ...config.http, listen: '127.0.0.1:0' } },
      logger: log.logger,
      processors: builtinProcessors({ standIns: false }),
      handleSignals: false,
      onReady: (r, o, a) => {
        runtime = r
        observability = o
        api = a!
        resolve()
      },
    })
  })
  await ready
  client = new XoProxyClient(api.url, f.token)
})

afterAll(async () => {
  sim?.clearFaults()
  await runtime?.shutdown({ force: true })
  await served
  await sim?.close()
  await dir?.remove()
})

describe('Xen Orchestra drives a backup job through the API', () => {
  const job = randomUUID()
  const remoteDir = () => join(dir.path, 'r1')

  it('runs the XO fixture job and streams its task log to the end', async () => {
    await mkdir(remoteDir(), { recursive: true })
    const vm = sim.listVms()[0]!.uuid
    const events = await drain(await stream(params(job, vm, remoteDir())), [])
    const { root, byId } = consolidate(events)
    expect(root.properties).toMatchObject({ name: 'backup run', jobId: job, scheduleId: FIXTURE_SCHEDULE_ID, runJobId: '1764867000000', mode: 'delta' })
    expect(root.status).toBe('success')
    expect(events.at(-1)).toMatchObject({ type: 'end', id: root.id, status: 'success' })
    const tasks = [...byId.values()]
    const vmTask = tasks.find((t) => (t.properties as Record<string, unknown>).name === 'backup VM')
    expect(vmTask).toMatchObject({ properties: { type: 'VM', id: vm }, status: 'success' })
    for (const name of ['snapshot', 'export', 'transfer', 'health check']) expect(tasks.some((t) => (t.properties as Record<string, unknown>).name === name && t.status === 'success'), name).toBe(true)
  })

  it('lists the result with backup.listVmBackups in XO’s shape', async () => {
    const vm = sim.listVms()[0]!.uuid
    const listing = (await client.call('backup.listVmBackups', { remotes: { [FIXTURE_REMOTE_ID]: { url: `file://${remoteDir()}`, options: '' } } })) as Record<string, Record<string, Record<string, unknown>[]>>
    const backups = listing[FIXTURE_REMOTE_ID]![vm]!
    expect(backups).toHaveLength(1)
    const b = backups[0]!
    expect(b).toMatchObject({ type: 'xo-vm-backup', backupRepository: FIXTURE_REMOTE_ID, jobId: job, scheduleId: FIXTURE_SCHEDULE_ID, mode: 'delta', vm: { uuid: vm }, withMemory: false, dynamicVhds: 1, differencingVhds: 0 })
    expect(b.id).toMatch(new RegExp(`^/xo-vm-backups/${vm}/\\d{8}T\\d{6}Z\\.json$`))
    expect((b.disks as { id: string }[])[0]!.id).toMatch(new RegExp(`^/xo-vm-backups/${vm}/vdis/${job}/`))
    expect(await client.call('remote.getTotalBackupSize', { remote: { url: `file://${remoteDir()}`, options: '' } })).toEqual({ onDisk: b.size })
    const one = (await client.call('backup.listVmBackups', { remotes: { [FIXTURE_REMOTE_ID]: { url: `file://${remoteDir()}` } }, vmId: vm })) as Record<string, Record<string, unknown[]>>
    expect(Object.keys(one[FIXTURE_REMOTE_ID]!)).toEqual([vm])
  })

  it('restores the listed backup as a new VM with backup.importVmBackup (a backup.restore task through the queue)', async () => {
    const vm = sim.listVms()[0]!.uuid
    const remote = { url: `file://${remoteDir()}`, options: '' }
    const listing = (await client.call('backup.listVmBackups', { remotes: { r: remote }, vmId: vm })) as Record<string, Record<string, { id: string }[]>>
    const backupId = listing.r![vm]![0]!.id
    const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
    try {
      const srUuid = simSrUuid
      const xapiParam = { url: sim.url, credentials: { username: sim.user, password: sim.password }, allowUnauthorized: false }
      const result = (await client.call('backup.importVmBackup', { backupId, remote, srUuid, xapi: xapiParam })) as { size: number; id: string }
      expect(result.id).toMatch(/^[0-9a-f-]{36}$/)
      expect(result.id).not.toBe(vm)
      expect(result.size).toBeGreaterThan(0)
      const restored = xapi.get('VM', result.id)
      expect(restored.name_label).toMatch(new RegExp(`^${xapi.get('VM', vm).name_label} \\(`))
      expect(restored.tags).toContain('restored from backup')
      // XO's task shape (xo-web's restore log reads the `transfer` task's result): root → transfer → one task per disk
      const all = (await client.collect('task.getAll')) as { properties: Record<string, unknown>; tasks?: { properties: { name: string }; result?: unknown; tasks?: unknown[] }[] }[]
      const run = all.find((t) => t.properties.backupId === backupId)!
      expect(run.properties).toMatchObject({ name: 'restore', jobId: job })
      expect(run.tasks?.map((t) => [t.properties.name, t.result, t.tasks?.length])).toEqual([['transfer', { size: result.size, id: result.id }, 1]])
    } finally {
      await xapi.close()
    }
  })

  it('shows the run in task.getAll, task.get and event.from', async () => {
    const all = (await client.collect('task.getAll')) as { id: string; status: string; properties: { jobId: string } }[]
    const run = all.find((t) => t.properties.jobId === job)!
    expect(run.status).toBe('success')
    expect(await client.call('task.get', { taskId: run.id })).toMatchObject({ id: run.id, status: 'success' })
    const ev = (await client.call('event.from', { token: '' })) as { events: { class: string; operation: string; snapshot: { id: string } }[] }
    expect(ev.events).toContainEqual(expect.objectContaining({ class: 'Task', operation: 'add', snapshot: expect.objectContaining({ id: run.id }) as unknown }))
    await client.call('task.destroy', { taskId: run.id })
    await expect(client.call('task.get', { taskId: run.id })).rejects.toMatchObject({ code: 1 })
  })

  it('refuses a second run of a running job, lists it running, and task.cancel interrupts it', async () => {
    const vm = sim.listVms()[1]!
    holdExport(vm.vdis[0]!.uuid)
    // event.from after the current token waits for the next change: the new run
    const { token } = (await client.call('event.from', { token: '' })) as { token: string }
    const next = client.call('event.from', { token, timeout: 60 }) as Promise<{ events: { operation: string; snapshot: { properties?: { jobId?: string } } }[]; token: string }>
    const it2 = await stream(params(job, vm.uuid, remoteDir()))
    const changes = await next
    expect(Number(changes.token)).toBeGreaterThan(Number(token))
    expect(changes.events.some((e) => e.operation === 'add' && e.snapshot.properties?.jobId === job)).toBe(true)
    const seen: XoEvent[] = []
    await readUntil(it2, seen, (e) => e.type === 'start' && e.properties?.name === 'transfer')
    const again = await client.call('backup.run', params(job, vm.uuid, remoteDir()), { assertType: 'iterator' }).catch((e: unknown) => e)
    expect(again).toBeInstanceOf(XoJsonRpcError)
    expect(again).toMatchObject({ message: 'job is already running', data: { jobId: job, code: 'E_JOB_RUNNING' } })
    expect(await client.collect('backup.listRunningJobs')).toContain(job)
    const rootId = seen[0]!.id
    expect(await client.call('task.cancel', { taskId: rootId })).toBe(true)
    const events = await drain(it2, seen)
    expect(events.at(-1)).toMatchObject({ type: 'end', id: rootId, status: 'interrupted' })
    expect(await client.collect('backup.listRunningJobs')).not.toContain(job)
    sim.clearFaults()
  })

  it('deletes a backup with backup.deleteVmBackup', async () => {
    const vm = sim.listVms()[0]!.uuid
    const remote = { url: `file://${remoteDir()}`, options: '' }
    const list = async () => ((await client.call('backup.listVmBackups', { remotes: { r: remote } })) as Record<string, Record<string, { id: string }[]>>).r![vm] ?? []
    const [backup] = await list()
    await client.call('backup.deleteVmBackup', { filename: backup!.id, remote })
    expect(await list()).toEqual([])
    // deleting it again is not an error (XO: already removed)
    await client.call('backup.deleteVmBackups', { filenames: [backup!.id], remote })
  })
})

describe('a full backup (XVA) restored through backup.importVmBackup, as xo-server calls it', () => {
  const job = randomUUID()
  const remoteDir = () => join(dir.path, 'full')
  const remote = () => ({ url: `file://${remoteDir()}`, options: '' })
  const sha = async (vdiUuid: string) => {
    const h = createHash('sha256')
    for await (const c of sim.rawDiskContent(vdiUuid)) h.update(c as Buffer)
    return h.digest('hex')
  }
  let backup: { id: string; timestamp: number }
  let shas: string[]

  /** xo-server's importVmBackupNg → callProxyMethod: the listed id, XO's restore settings, the log stream. */
  async function xoRestoreStream(backupId: string): Promise<AsyncGenerator<unknown>> {
    const xapi = { allowUnauthorized: false, credentials: { username: sim.user, password: sim.password }, url: sim.url }
    const settings = { mapVdisSrs: {}, newMacAddresses: false, useDifferentialRestore: false }
    const params = { backupId, remote: remote(), settings, srUuid: simSrUuid, streamLogs: true, xapi }
    return (await client.call('backup.importVmBackup', params, { assertType: 'iterator' })) as AsyncGenerator<unknown>
  }
  const xoRestore = async (backupId: string): Promise<XoEvent[]> => drain(await xoRestoreStream(backupId), [])
  const poolCounts = (xapi: XapiClient) => ({ vms: xapi.listVms({ includeSnapshots: true }).length, vdis: xapi.listVdis().length })

  it('runs XO’s job in full mode (zstd) and lists an XVA backup', async () => {
    await mkdir(remoteDir(), { recursive: true })
    const vm = sim.listVms()[0]!
    const p = params(job, vm.uuid, remoteDir()) as { job: Record<string, unknown> }
    Object.assign(p.job, { mode: 'full', compression: 'zstd' })
    const events = await drain(await stream(p), [])
    expect(consolidate(events).root).toMatchObject({ status: 'success', properties: { mode: 'full' } })
    shas = await Promise.all(vm.vdis.map((v) => sha(v.uuid)))
    const listing = (await client.call('backup.listVmBackups', { remotes: { [FIXTURE_REMOTE_ID]: remote() }, vmId: vm.uuid })) as Record<string, Record<string, { id: string; mode: string; timestamp: number }[]>>
    const backups = listing[FIXTURE_REMOTE_ID]![vm.uuid]!
    expect(backups.map((b) => b.mode)).toEqual(['full'])
    backup = backups[0]!
  })

  it('restores it as a new VM whose disks equal the source at backup time, with XO’s task log and result', async () => {
    const vm = sim.listVms()[0]!
    sim.writeBlocks(vm.uuid, { blocks: 2 }) // the source moves on: the restore must give the backed-up content
    const events = await xoRestore(backup.id)
    const { root, byId } = consolidate(events)
    // XO's proxy root task: xo-web's restore log list reads jobId (it slices it) and time
    expect(root.properties).toEqual({ name: 'restore', backupId: backup.id, jobId: job, srId: simSrUuid, time: backup.timestamp })
    expect(root.status).toBe('success')
    // xo-server's forwardResult(root log) is ImportVmBackup's { size, id }: it returns `result.id`
    const result = root.result as { size: number; id: string }
    expect(Object.keys(result).sort()).toEqual(['id', 'size'])
    // xo-web's restore log reads size and the VM from the `transfer` task's result
    expect(root.tasks).toEqual([expect.objectContaining({ properties: { name: 'transfer' }, status: 'success', result })])
    expect(byId.size).toBe(2)
    expect(result.size).toBeGreaterThan(0)
    const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
    try {
      const restored = xapi.get('VM', result.id)
      expect(restored.name_label).toMatch(new RegExp(`^${xapi.get('VM', vm.uuid).name_label} \\(\\d{8}T\\d{6}Z\\)$`))
      expect(restored.tags).toContain('restored from backup')
      const disks = xapi.vmDisks(restored.$ref)
      for (const d of disks) expect(d.vdi.SR).toBe(xapi.get('SR', simSrUuid).$ref)
      expect(await Promise.all(disks.map((d) => sha(d.vdi.uuid)))).toEqual(shas)
    } finally {
      await xapi.close()
    }
    const all = (await client.collect('task.getAll')) as { id: string; status: string }[]
    expect(all).toContainEqual(expect.objectContaining({ id: root.id, status: 'success' }))
  })

  it('task.cancel interrupts an XVA restore held in its upload; XAPI keeps nothing of it', async () => {
    const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
    try {
      const before = poolCounts(xapi)
      // the simulator's VM import stops reading the XVA after 512 bytes until its task is cancelled
      sim.setFault({ kind: 'stall', afterBytes: 512, on: 'import', times: 1 })
      const it = await xoRestoreStream(backup.id)
      const seen: XoEvent[] = []
      await readUntil(it, seen, (e) => e.type === 'start' && e.properties?.name === 'transfer')
      expect(await client.call('task.cancel', { taskId: seen[0]!.id })).toBe(true)
      const { root } = consolidate(await drain(it, seen))
      expect(root.status).toBe('interrupted')
      expect(poolCounts(xapi)).toEqual(before)
    } finally {
      sim.clearFaults()
      await xapi.close()
    }
  })

  it('refuses an XVA whose checksum file disagrees with E_XVA_CORRUPT through the API, leaving nothing on the pool', async () => {
    const xva = join(remoteDir(), backup.id.replace(/\.json$/, '.xva'))
    await writeFile(`${xva}.checksum`, `$1$$${'0'.repeat(32)}`)
    const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
    try {
      const counts = () => poolCounts(xapi)
      const before = counts()
      const { root } = consolidate(await xoRestore(backup.id))
      expect(root).toMatchObject({ status: 'failure', result: { code: 'E_XVA_CORRUPT' } })
      expect(counts()).toEqual(before)
      // without streamLogs (xo-server's fallback for an older proxy): a JSON-RPC error with the code
      const scalar = { backupId: backup.id, remote: remote(), srUuid: simSrUuid, xapi: { url: sim.url, credentials: { username: sim.user, password: sim.password } } }
      const refused = await client.call('backup.importVmBackup', scalar).catch((e: unknown) => e)
      expect(refused).toBeInstanceOf(XoJsonRpcError)
      expect(refused).toMatchObject({ data: { code: 'E_XVA_CORRUPT' } })
      expect(counts()).toEqual(before)
      // a backup that is not on the remote fails the call itself (XO's proxy reads the metadata first)
      const missing = await client.call('backup.importVmBackup', { ...scalar, backupId: backup.id.replace(/\d{8}T/, '19990101T') }).catch((e: unknown) => e)
      expect(missing).toMatchObject({ data: { code: 'ENOENT' } })
    } finally {
      await xapi.close()
    }
  })
})

describe('more of XO’s flows', () => {
  it('resolves a smart-mode pattern (pool and tags) against XAPI when the run starts', async () => {
    const target = sim.listVms()[1]!.uuid
    const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
    let poolUuid: string
    try {
      await xapi.addTag('VM', xapi.get('VM', target).$ref, 'smart-sel')
      poolUuid = xapi.poolUuid
    } finally {
      await xapi.close()
    }
    const remoteDir = join(dir.path, 'smart')
    await mkdir(remoteDir, { recursive: true })
    const p = params(randomUUID(), target, remoteDir) as { job: Record<string, unknown> }
    p.job.vms = { $pool: { __or: [poolUuid] }, tags: { __or: [['smart-sel']] }, power_state: 'Running' }
    const events = await drain(await stream(p), [])
    const { root, byId } = consolidate(events)
    expect(root.status).toBe('success')
    const vmTasks = [...byId.values()].filter((t) => (t.properties as Record<string, unknown>).name === 'backup VM')
    expect(vmTasks.map((t) => (t.properties as Record<string, unknown>).id)).toEqual([target])
  })

  it('answers backup.run without streamLogs once the run ended, with its result', async () => {
    const remoteDir = join(dir.path, 'scalar')
    await mkdir(remoteDir, { recursive: true })
    const p = params(randomUUID(), sim.listVms()[1]!.uuid, remoteDir)
    delete p.streamLogs
    const result = (await client.call('backup.run', p)) as { vms: number; succeeded: number }
    expect(result).toMatchObject({ vms: 1, succeeded: 1 })
  })

  it('deletes a backup in the middle of a chain: the next delta absorbs it and every kept point restores', async () => {
    const vm = sim.listVms()[0]!
    const vdi = vm.vdis[0]!
    const remoteDir = join(dir.path, 'chain')
    await mkdir(remoteDir, { recursive: true })
    const job = randomUUID()
    const raws: string[] = []
    for (let i = 0; i < 3; i++) {
      if (i > 0) sim.writeBlocks(vm.uuid, { blocks: 3 })
      // the fixture's schedule keeps 2 backups: keep them all here
      const p = params(job, vm.uuid, remoteDir) as { job: { settings: Record<string, Record<string, unknown>> } }
      p.job.settings[FIXTURE_SCHEDULE_ID]!.exportRetention = 5
      const events = await drain(await stream(p), [])
      expect(events.at(-1)).toMatchObject({ type: 'end', status: 'success' })
      raws.push(join(dir.path, `chain-${i}.raw`))
      await saveRaw(sim, vdi.uuid, raws[i]!)
    }
    const xoRemote = { url: `file://${remoteDir}`, options: '' }
    const list = async () => ((await client.call('backup.listVmBackups', { remotes: { r: xoRemote }, vmId: vm.uuid })) as Record<string, Record<string, { id: string; timestamp: number }[]>>).r![vm.uuid]!
    const before = await list()
    expect(before).toHaveLength(3)
    await client.call('backup.deleteVmBackups', { filenames: [before[1]!.id], remote: xoRemote })
    const after = await list()
    expect(after.map((b) => b.id)).toEqual([before[0]!.id, before[2]!.id])
    const remote = createRemote(`file://${remoteDir}`)
    await remote.open()
    try {
      const report = await verifyRemote(remote, { full: true })
      expect(report.problems).toEqual([])
      for (const [i, b] of [[0, after[0]!], [2, after[1]!]] as const) {
        const out = join(dir.path, `chain-restored-${i}.raw`)
        const ts = /(\d{8}T\d{6}Z)\.json$/.exec(b.id)![1]!
        await restoreDiskToFile(remote, { vmUuid: vm.uuid, vdiUuid: vdi.uuid, at: ts }, out)
        expect((await readFile(out)).equals(await readFile(raws[i]!))).toBe(true)
      }
    } finally {
      await remote.close()
    }
  })
})

describe('two proxies of one pool behind one API', () => {
  it('share a batch of jobs', async () => {
    const pool = `pool-${randomUUID().slice(0, 8)}`
    const proxies: ProxyRuntime[] = []
    const poolApiDir = join(dir.path, 'pool-state')
    const { startApi } = await import('../../src/api/index.js')
    // keep-alive spaces while the stalled runs are idle: XO's line parser must still read every event
    const poolApi = (await startApi({ config: apiConfig(f, redisUrl, poolApiDir, { pool, keepAliveMs: 20 }), logger: silentLogger, sealKey: f.sealKey }))!
    try {
      for (const id of ['pa', 'pb']) {
        const c = compileConfig({ redis: { url: redisUrl }, proxy: { id: `${id}-${pool}`, pools: [pool] }, security: { sealKey: f.sealText }, log: { level: 'silent' }, workers: { threads: 1, concurrency: 1, attempts: 1 } })
        const p = new ProxyRuntime({ config: c, processors: builtinProcessors({ standIns: false }), sealKey: f.sealKey, logger: silentLogger })
        await p.start()
        proxies.push(p)
      }
      const poolClient = new XoProxyClient(poolApi.url, f.token)
      const vms = sim.listVms().slice(2, 6)
      const remoteDir = join(dir.path, 'pool-remote')
      await mkdir(remoteDir, { recursive: true })
      // the first two exports stall: each proxy (concurrency 1) holds one until it is cancelled
      for (const vm of vms.slice(0, 2)) holdExport(vm.vdis[0]!.uuid)
      const streams: AsyncGenerator<unknown>[] = []
      for (const vm of vms) streams.push((await poolClient.call('backup.run', params(randomUUID(), vm.uuid, remoteDir), { assertType: 'iterator' })) as AsyncGenerator<unknown>)
      const seen: XoEvent[][] = vms.map(() => [])
      for (const i of [0, 1]) await readUntil(streams[i]!, seen[i]!, (e) => e.type === 'start' && e.properties?.name === 'transfer')
      const proxyOf = (events: XoEvent[]) => events.find((e) => e.type === 'info' && typeof e.data?.proxy === 'string')?.data?.proxy
      expect(proxyOf(seen[0]!)).not.toBe(proxyOf(seen[1]!))
      for (const i of [0, 1]) await poolClient.call('task.cancel', { taskId: seen[i]![0]!.id })
      const ends = await Promise.all(streams.map(async (s, i) => (await drain(s, seen[i]!)).at(-1)))
      expect(ends.map((e) => e?.status)).toEqual(['interrupted', 'interrupted', 'success', 'success'])
      const ranBy = new Set(seen.map((events) => proxyOf(events)))
      expect(ranBy.size).toBe(2)
      expect([...ranBy].every((p) => typeof p === 'string' && p.includes(pool))).toBe(true)
    } finally {
      sim.clearFaults()
      await Promise.all(proxies.map((p) => p.shutdown({ force: true })))
      await poolApi.close()
    }
  })
})

describe('the token stays secret', () => {
  it('is in no log line, no metric and no Redis value', async () => {
    expect(log.text().length).toBeGreaterThan(0)
    expect(log.text()).not.toContain(f.token)
    const metrics = await fetch(observability.http.url.replace(/\/?$/, '/metrics')).then((r) => r.text())
    expect(metrics).toContain('backup_proxy')
    expect(metrics).not.toContain(f.token)
    const redis = new Redis(redisUrl)
    try {
      let cursor = '0'
      let scanned = 0
      do {
        const [next, keys] = await redis.scan(cursor, 'COUNT', 500)
        cursor = next
        for (const key of keys) {
          scanned++
          expect(key).not.toContain(f.token)
          const type = await redis.type(key)
          const dump = type === 'string' ? await redis.get(key) : type === 'hash' ? JSON.stringify(await redis.hgetall(key)) : type === 'list' ? JSON.stringify(await redis.lrange(key, 0, -1)) : type === 'zset' ? JSON.stringify(await redis.zrange(key, '0', '-1')) : type === 'set' ? JSON.stringify(await redis.smembers(key)) : type === 'stream' ? JSON.stringify(await redis.xrange(key, '-', '+')) : ''
          expect(dump ?? '').not.toContain(f.token)
        }
      } while (cursor !== '0')
      expect(scanned).toBeGreaterThan(0)
    } finally {
      redis.disconnect()
    }
  })
})

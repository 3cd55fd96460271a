/**
 * Metadata backups (XO's `metadataBackup`) against Xen Orchestra's own code, on a local remote and the
 * XAPI simulator's pool database dump:
 *   - ours → XO: three runs with retention 2 (pool and XO config); XO's RemoteAdapter lists exactly the
 *     two newest of each, with the fields its UI reads; the data is the pool's dump and XO's config; XO's
 *     RestoreMetadataBackup, over XO's own XAPI client, sends our pool backup back to the pool (the
 *     simulator receives the same bytes) and returns our XO config;
 *   - XO → ours: backups written by XO's PoolMetadataBackup / XoMetadataBackup runners are listed by us,
 *     our restore sends XO's pool dump to the pool, and our delete removes them (XO stops listing them);
 *   - a job XO would refuse (no retention for its modes) is refused the same way.
 */
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { deleteMetadataBackup, listPoolMetadataBackups, listXoMetadataBackups, readXoConfigBackup } from '../../src/backup/metadata-layout.js'
import { restorePoolMetadata, runMetadataBackup } from '../../src/backup/metadata-backup.js'
import { parseTask, type BackupMetadataTask } from '../../src/queue/tasks.js'
import { createRemote } from '../../src/remotes/index.js'
import { XapiClient } from '../../src/xapi/client.js'
import { runCli } from '../../src/cli/program.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { startSim } from '../backup/helpers/fixture.js'
import { xoAdapter, xoXapi, type XoXapiObject } from './oracle.js'

const SCHEDULE = '0c0b5e0e-6b7a-4c3e-9a49-4f4a0f7f0a01'
const XO_SCHEDULE = '0c0b5e0e-6b7a-4c3e-9a49-4f4a0f7f0a02'
const XO_CONFIG = JSON.stringify({ version: 1, users: [{ email: 'admin@admin.net' }] })

let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }
let poolUuid: string

interface XoMetadataAdapter {
  listPoolMetadataBackups(): Promise<Record<string, (Record<string, unknown> & { id: string })[]>>
  listXoMetadataBackups(): Promise<(Record<string, unknown> & { id: string })[]>
  deleteMetadataBackup(id: string): Promise<void>
  handler: unknown
}

async function nextSecond(): Promise<void> {
  const start = Math.floor(Date.now() / 1000)
  while (Math.floor(Date.now() / 1000) === start) await new Promise((resolve) => setTimeout(resolve, 20))
}

function metadataTask(url: string, settings: Record<string, unknown>, xoMetadata: string | undefined = XO_CONFIG): BackupMetadataTask {
  return parseTask({
    kind: 'backup.metadata',
    job: { id: 'meta-job', name: 'metadata job', type: 'metadataBackup', pools: { id: poolUuid }, remotes: { id: 'r' }, ...(xoMetadata === undefined ? {} : { xoMetadata }), settings: { '': {}, [SCHEDULE]: settings } },
    schedule: { id: SCHEDULE, name: 'nightly' },
    remotes: { r: { url } },
    xapis: { x: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
    recordToXapi: { [poolUuid]: 'x' },
  }) as BackupMetadataTask
}

async function connectOurs(): Promise<XapiClient> {
  return XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password, allowUnauthorized: false, signal: new AbortController().signal })
}

beforeAll(async () => {
  sim = await startSim({ vms: 1, diskSizeBytes: 4 * 1024 * 1024 })
  dir = await makeTempDir('bp-metadata-')
  const client = await connectOurs()
  poolUuid = Object.values((await client.call('pool.get_all_records')) as Record<string, { uuid: string }>)[0]!.uuid
  await client.close()
})
afterAll(async () => {
  await sim?.close()
  await dir?.remove()
})

describe('metadata backups', () => {
  it('ours: XO lists the kept ones, reads them, and restores them with its own code', async () => {
    const root = join(dir.path, 'ours')
    await mkdir(root)
    const url = `file://${root}`
    for (let i = 0; i < 3; i++) {
      if (i > 0) await nextSecond()
      const s = await runMetadataBackup(metadataTask(url, { retentionPoolMetadata: 2, retentionXoMetadata: 2 }), { signal: new AbortController().signal })
      expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
    }
    const { adapter: a, close } = await xoAdapter({ url })
    const adapter = a as unknown as XoMetadataAdapter
    try {
      const pools = await adapter.listPoolMetadataBackups()
      expect(Object.keys(pools)).toEqual([poolUuid])
      expect(pools[poolUuid]).toHaveLength(2)
      for (const b of pools[poolUuid]!) {
        expect(b).toMatchObject({ jobId: 'meta-job', jobName: 'metadata job', scheduleId: SCHEDULE, scheduleName: 'nightly', pool: { uuid: poolUuid } })
        expect((b.poolMaster as { uuid?: unknown }).uuid).toEqual(expect.any(String))
        expect(b.id).toMatch(new RegExp(`^/xo-pool-metadata-backups/${SCHEDULE}/${poolUuid}/\\d{8}T\\d{6}Z$`))
        expect((await readFile(join(root, b.id, 'data'))).equals(sim.poolDump())).toBe(true)
      }
      const xo = await adapter.listXoMetadataBackups()
      expect(xo).toHaveLength(2)
      expect(xo[0]).toMatchObject({ data: './data.json', jobId: 'meta-job', scheduleId: SCHEDULE })

      // XO's restore, with XO's XAPI client: the pool receives our dump; XO's config comes back as it was
      // (xo-server hands the proxy the listed id after `<remote id>/`: without the leading slash)
      const { RestoreMetadataBackup } = (await import('@xen-orchestra/backups/RestoreMetadataBackup.mjs')) as { RestoreMetadataBackup: new (o: Record<string, unknown>) => { run(): Promise<unknown> } }
      const xapi = await xoXapi(sim)
      try {
        await new RestoreMetadataBackup({ backupId: pools[poolUuid]![1]!.id.slice(1), handler: adapter.handler, xapi }).run()
      } finally {
        await xapi.disconnect()
      }
      expect(sim.restoredPoolDumps().at(-1)!.equals(sim.poolDump())).toBe(true)
      expect(await new RestoreMetadataBackup({ backupId: xo[1]!.id.slice(1), handler: adapter.handler }).run()).toBe(XO_CONFIG)

      // XO deletes one of ours
      await adapter.deleteMetadataBackup(xo[0]!.id.slice(1))
      expect((await adapter.listXoMetadataBackups()).map((b) => b.id)).toEqual([xo[1]!.id])
    } finally {
      await close()
    }
  })

  it('XO\'s: we list, restore and delete what XO\'s runners wrote', async () => {
    const root = join(dir.path, 'xo')
    await mkdir(root)
    const url = `file://${root}`
    const { adapter, close } = await xoAdapter({ url })
    const xapi = await xoXapi(sim)
    try {
      const { PoolMetadataBackup } = (await import('@xen-orchestra/backups/_runners/_PoolMetadataBackup.mjs')) as { PoolMetadataBackup: new (o: Record<string, unknown>) => { run(): Promise<void> } }
      const { XoMetadataBackup } = (await import('@xen-orchestra/backups/_runners/_XoMetadataBackup.mjs')) as { XoMetadataBackup: new (o: Record<string, unknown>) => { run(): Promise<void> } }
      const pool = Object.values(xapi.objects.indexes.type.pool!)[0] as XoXapiObject
      const common = { config: {}, job: { id: 'xo-job', name: 'XO job' }, remoteAdapters: { r: adapter }, schedule: { id: XO_SCHEDULE, name: 'daily' } }
      await new PoolMetadataBackup({ ...common, pool, settings: { retentionPoolMetadata: 3 } }).run()
      await new XoMetadataBackup({ ...common, job: { ...common.job, xoMetadata: XO_CONFIG }, settings: { retentionXoMetadata: 3 } }).run()
    } finally {
      await xapi.disconnect()
      await close()
    }
    const remote = createRemote(url)
    await remote.open()
    const client = await connectOurs()
    try {
      const pools = await listPoolMetadataBackups(remote)
      expect(Object.keys(pools)).toEqual([poolUuid])
      const [poolBackup] = pools[poolUuid]!
      expect(poolBackup).toMatchObject({ jobId: 'xo-job', scheduleId: XO_SCHEDULE })
      const before = sim.restoredPoolDumps().length
      const restored = await restorePoolMetadata(remote, poolBackup!.id, client, { allowUnauthorized: false, signal: new AbortController().signal })
      expect(restored.sizeBytes).toBe(sim.poolDump().length)
      expect(sim.restoredPoolDumps()).toHaveLength(before + 1)
      expect(sim.restoredPoolDumps().at(-1)!.equals(sim.poolDump())).toBe(true)
      const [xoBackup] = await listXoMetadataBackups(remote)
      expect(await readXoConfigBackup(remote, xoBackup!.id)).toBe(XO_CONFIG)
      await deleteMetadataBackup(remote, poolBackup!.id)
      await deleteMetadataBackup(remote, xoBackup!.id)
      await expect(deleteMetadataBackup(remote, 'xo-vm-backups/x/20260101T000000Z')).rejects.toMatchObject({ code: 'E_USAGE' })
    } finally {
      await client.close()
      await remote.close()
    }
    const again = await xoAdapter({ url })
    try {
      const a = again.adapter as unknown as XoMetadataAdapter
      expect(await a.listPoolMetadataBackups()).toEqual({})
      expect(await a.listXoMetadataBackups()).toEqual([])
    } finally {
      await again.close()
    }
  })

  it('CLI: metadata list, restore (pool → XAPI, XO config → file) and delete', async () => {
    const root = join(dir.path, 'cli')
    await mkdir(root)
    const url = `file://${root}`
    expect((await runMetadataBackup(metadataTask(url, { retentionPoolMetadata: 1, retentionXoMetadata: 1 }), { signal: new AbortController().signal })).status).toBe('success')
    let out = ''
    const io = { stdout: (t: string) => void (out += t), stderr: () => undefined, isTTY: false }
    expect(await runCli(['metadata', 'list', url], io)).toBe(0)
    // human by default: a table with one row per backup, the ids restore and delete take
    expect(out).toMatch(/^TYPE +POOL +POOL UUID +TIME +JOB +ID/)
    expect(out).toMatch(new RegExp(`^pool .* ${poolUuid} .* /xo-pool-metadata-backups/`, 'm'))
    expect(out).toMatch(/^xo-config .* \/xo-config-backups\//m)
    expect(out).toContain('2 metadata backup(s)')
    out = ''
    expect(await runCli(['metadata', 'list', url, '--json'], io)).toBe(0)
    const listed = JSON.parse(out) as { pools: Record<string, { id: string }[]>; xo: { id: string }[] }
    const poolId = listed.pools[poolUuid]![0]!.id
    const xoId = listed.xo[0]!.id
    const before = sim.restoredPoolDumps().length
    const xapiUrl = sim.url.replace('://', `://${sim.user}:${sim.password}@`)
    out = ''
    expect(await runCli(['metadata', 'restore', url, poolId, '--xapi', xapiUrl], io)).toBe(0)
    expect(sim.restoredPoolDumps()).toHaveLength(before + 1)
    expect(out).toMatch(new RegExp(`^restored pool metadata backup ${poolId.slice(1)} \\(.+\\) to pool ${poolUuid}\n$`))
    out = ''
    expect(await runCli(['metadata', 'restore', url, xoId, '--to', join(root, 'xo.json'), '--json'], io)).toBe(0)
    expect(JSON.parse(out)).toEqual({ backupId: xoId.slice(1), to: join(root, 'xo.json') })
    const file = join(root, 'xo-config.json')
    expect(await runCli(['metadata', 'restore', url, xoId, '--to', file], io)).toBe(0)
    expect(await readFile(file, 'utf8')).toBe(XO_CONFIG)
    out = ''
    expect(await runCli(['metadata', 'delete', url, poolId], io)).toBe(0)
    expect(out).toBe(`deleted metadata backup ${poolId.slice(1)}\n`)
    expect(await runCli(['metadata', 'restore', url, xoId], io)).toBe(2)
    out = ''
    expect(await runCli(['metadata', 'list', url, '--json'], io)).toBe(0)
    expect((JSON.parse(out) as { pools: Record<string, unknown> }).pools).toEqual({})
  })

  it('refuses a job XO would refuse', async () => {
    const s = await runMetadataBackup(metadataTask(`file://${dir.path}`, { retentionPoolMetadata: 0, retentionXoMetadata: 0 }), { signal: new AbortController().signal })
    expect(s.status).toBe('failure')
    expect(JSON.stringify(s.result)).toContain('no retentions corresponding to the metadata modes found')
  })
})

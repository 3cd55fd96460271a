/**
 * Xen Orchestra's mirror and metadata jobs through the API, as xo-server sends them to a proxy (real
 * queue, `serve`, XAPI simulator): `backup.run` of a `mirrorBackup` job copies a remote's backups to
 * another (listed by `backup.listVmBackups` with the mirror's job id), `backup.run` of a `metadataBackup`
 * job (XO's bare-host XAPI url, XO's configuration) writes the pool's dump and XO's config, then
 * `listPoolMetadataBackups` / `listXoMetadataBackups` list them with XO's ids, `restoreMetadataBackup`
 * sends the pool's dump back to the pool and answers XO's config in its task log, and
 * `deleteMetadataBackup` removes one.
 */
import { randomUUID } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import type { RunningApi } from '../../src/api/index.js'
import { xapiUrlFromXo } from '../../src/api/xo-job.js'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { runBackup } from '../../src/backup/run.js'
import { silentLogger } from '../../src/common/log.js'
import { builtinProcessors } from '../../src/workers/builtin-processors.js'
import type { ProxyRuntime } from '../../src/workers/proxy.js'
import { serve } from '../../src/workers/serve.js'
import { XapiClient } from '../../src/xapi/client.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, MiB, runTask, startSim } from '../backup/helpers/fixture.js'
import { apiConfig, apiFixture } from './helpers.js'
import { XoProxyClient } from './xo-client.js'

const redisUrl = inject('redisUrl')
const SRC = '0f6c1f4e-2a0b-4a8e-9e57-3a3f3b0c0001'
const DST = '0f6c1f4e-2a0b-4a8e-9e57-3a3f3b0c0002'
const SCHEDULE = '0f6c1f4e-2a0b-4a8e-9e57-3a3f3b0c0003'
const XO_CONFIG = JSON.stringify({ users: [], servers: [] })

let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }
let runtime: ProxyRuntime
let served: Promise<number>
let api: RunningApi
let client: XoProxyClient
let poolUuid: string

type XoEvent = { type: string; id: string; parentId?: string; properties?: Record<string, unknown>; status?: string; result?: unknown }

async function run(params: Record<string, unknown>): Promise<XoEvent[]> {
  const out: XoEvent[] = []
  for await (const e of (await client.call('backup.run', { ...params, streamLogs: true }, { assertType: 'iterator' })) as AsyncIterable<XoEvent>) out.push(e)
  return out
}

const remotes = () => ({ [SRC]: { id: SRC, name: 'source', url: `file://${join(dir.path, 'src')}`, options: '', enabled: true }, [DST]: { id: DST, name: 'mirror', url: `file://${join(dir.path, 'dst')}`, options: '', enabled: true } })

beforeAll(async () => {
  sim = await startSim({ vms: 1, diskSizeBytes: 8 * MiB })
  dir = await makeTempDir('bp-api-mirror-')
  for (const d of ['src', 'dst']) await mkdir(join(dir.path, d))
  const probe = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  poolUuid = Object.values((await probe.call('pool.get_all_records')) as Record<string, { uuid: string }>)[0]!.uuid
  await probe.close()
  const f = await apiFixture()
  const config = apiConfig(f, redisUrl, join(dir.path, 'state'))
  await new Promise<void>((resolve) => {
    served = serve({
      config: { ...config, http: { ...config.http, listen: '127.0.0.1:0' } },
      logger: silentLogger,
      processors: builtinProcessors({ standIns: false }),
      handleSignals: false,
      onReady: (r, _o, a) => {
        runtime = r
        api = a!
        resolve()
      },
    })
  })
  client = new XoProxyClient(api.url, f.token)
})

afterAll(async () => {
  await runtime?.shutdown({ force: true })
  await served
  await sim?.close()
  await dir?.remove()
})

describe('XO mirror and metadata jobs through the API', () => {
  it('backup.run of a mirrorBackup job copies the source\'s backups', async () => {
    const vm = sim.listVms()[0]!.uuid
    for (let i = 0; i < 2; i++) {
      sim.writeBlocks(vm, { blocks: 2 })
      expect((await runBackup(runTask(sim, [vm], { r: `file://${join(dir.path, 'src')}` }, { exportRetention: 10 }), { defaults, exporter: runDiskExport, signal: new AbortController().signal })).status).toBe('success')
    }
    const job = randomUUID()
    const events = await run({
      job: { id: job, name: 'mirror job', type: 'mirrorBackup', mode: 'delta', sourceRemote: SRC, remotes: { id: { __or: [DST] } }, settings: { '': {}, [SCHEDULE]: { exportRetention: 5 } }, proxy: 'p' },
      remotes: remotes(),
      schedule: { id: SCHEDULE, jobId: job, cron: '0 * * * *', enabled: true, name: 'hourly', timezone: 'UTC' },
      xapis: {},
      recordToXapi: {},
      jobData: { runJobId: '1', userId: 'u' },
    })
    expect(events.at(-1)).toMatchObject({ type: 'end', status: 'success' })
    expect(events.some((e) => e.type === 'start' && e.properties?.name === 'backup VM' && e.properties.id === vm)).toBe(true)
    const listing = (await client.call('backup.listVmBackups', { remotes: { [DST]: { url: remotes()[DST].url } } })) as Record<string, Record<string, { jobId: string }[]>>
    expect(listing[DST]![vm]!.map((b) => b.jobId)).toEqual([job, job])
  })

  it('backup.run of a metadataBackup job, then list, restore and delete through XO\'s methods', async () => {
    const job = randomUUID()
    const events = await run({
      job: { id: job, name: 'metadata job', type: 'metadataBackup', pools: { id: poolUuid }, remotes: { id: DST }, xoMetadata: XO_CONFIG, settings: { '': {}, [SCHEDULE]: { retentionPoolMetadata: 2, retentionXoMetadata: 2 } }, proxy: 'p' },
      remotes: { [DST]: remotes()[DST] },
      schedule: { id: SCHEDULE, name: 'daily' },
      xapis: { srv: { allowUnauthorized: false, credentials: { username: sim.user, password: sim.password }, url: sim.url } },
      recordToXapi: { [poolUuid]: 'srv' },
    })
    expect(events.at(-1), JSON.stringify(events)).toMatchObject({ type: 'end', status: 'success' })
    // XO's metadata executor sends the server's host as registered: a bare host means https (the simulator here is http)
    expect([xapiUrlFromXo('10.0.0.1'), xapiUrlFromXo('h:8443'), xapiUrlFromXo(sim.url)]).toEqual(['https://10.0.0.1', 'https://h:8443', sim.url])
    const remote = { url: remotes()[DST].url, options: '' }
    const pools = (await client.call('backup.listPoolMetadataBackups', { remotes: { [DST]: remote } })) as Record<string, Record<string, { id: string; jobId: string }[]>>
    const poolBackup = pools[DST]![poolUuid]![0]!
    expect(poolBackup).toMatchObject({ jobId: job, id: expect.stringMatching(new RegExp(`^/xo-pool-metadata-backups/${SCHEDULE}/${poolUuid}/`)) as string })
    const xo = (await client.call('backup.listXoMetadataBackups', { remotes: { [DST]: remote } })) as Record<string, { id: string }[]>
    const xoBackup = xo[DST]![0]!

    const before = sim.restoredPoolDumps().length
    const xapi = { allowUnauthorized: false, credentials: { username: sim.user, password: sim.password }, url: sim.url }
    const restored = await client.collect('backup.restoreMetadataBackup', { backupId: poolBackup.id.slice(1), remote, xapi }) as XoEvent[]
    expect(restored.at(-1)).toMatchObject({ type: 'end', status: 'success' })
    expect(restored[0]).toMatchObject({ type: 'start', properties: { name: 'metadataRestore', metadata: { jobId: job } } })
    expect(sim.restoredPoolDumps()).toHaveLength(before + 1)
    const xoRestored = await client.collect('backup.restoreMetadataBackup', { backupId: xoBackup.id.slice(1), remote }) as XoEvent[]
    expect(xoRestored.at(-1)).toMatchObject({ type: 'end', status: 'success', result: XO_CONFIG })

    await client.call('backup.deleteMetadataBackup', { backupId: poolBackup.id.slice(1), remote })
    const after = (await client.call('backup.listPoolMetadataBackups', { remotes: { [DST]: remote } })) as Record<string, Record<string, unknown[]>>
    expect(after[DST]).toEqual({})
  })
})

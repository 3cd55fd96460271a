/**
 * Full backups through the real queue: EnqueueClient → BullMQ → ProxyRuntime (builtin processors, the
 * XVA moved by the stream pool's `backup.xva` and `backup.restoreXva` thread tasks) → a plain and an
 * encrypted local remote and the XAPI simulator. The plain remote gets XO's `.xva.checksum`, the
 * encrypted one none (as XO); a `backup.restore` of each point gives a VM with the source's disks. The
 * bytes go through the proxy's stream pool: one `backup.xva` task writing to both targets, one
 * `backup.restoreXva` per restore.
 */
import { createHash } from 'node:crypto'
import { mkdir, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest'
import type { RestoreToSrResult } from '../../src/backup/restore-task.js'
import { metadataPath } from '../../src/backup/layout.js'
import { silentLogger } from '../../src/common/log.js'
import { compileConfig } from '../../src/config/index.js'
import { EnqueueClient } from '../../src/queue/client.js'
import { SealKey } from '../../src/queue/seal.js'
import type { TaskInputOf } from '../../src/queue/tasks.js'
import { builtinProcessors } from '../../src/workers/builtin-processors.js'
import { ProxyRuntime } from '../../src/workers/proxy.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { MiB, startSim } from '../backup/helpers/fixture.js'
import { proxyConfig } from '../backup/helpers/proxy-config.js'

const sealText = SealKey.generate().export()
const sealKey = SealKey.fromString(sealText)
const redisUrl = inject('redisUrl')
const proxyId = `xva-q-${process.pid}-${Date.now().toString(36)}`
let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }
let client: EnqueueClient
let proxy: ProxyRuntime
let remotes: Record<string, { url: string; options?: Record<string, unknown> }>

const sha = async (vdiUuid: string) => {
  const h = createHash('sha256')
  for await (const c of sim.rawDiskContent(vdiUuid)) h.update(c as Buffer)
  return h.digest('hex')
}

beforeAll(async () => {
  sim = await startSim({ disksPerVm: 2, diskSizeBytes: 8 * MiB, srs: 2 })
  dir = await makeTempDir('bp-xva-queue-')
  for (const r of ['plain', 'enc']) await mkdir(join(dir.path, r))
  remotes = { plain: { url: `file://${dir.path}/plain` }, enc: { url: `file://${dir.path}/enc`, options: { encryptionKey: 'e'.repeat(32) } } }
  client = new EnqueueClient({ redis: compileConfig(proxyConfig(redisUrl, sealText, 'x')).redis, sealKey, attempts: 1 })
  proxy = new ProxyRuntime({ config: compileConfig(proxyConfig(redisUrl, sealText, proxyId)), processors: builtinProcessors({ standIns: false }), sealKey, logger: silentLogger })
  await proxy.start()
}, 60_000)
afterAll(async () => {
  await client?.close()
  await proxy?.shutdown({ force: true })
  await sim?.close()
  await dir?.remove()
})

describe('full backups through the queue (backup.xva / backup.restoreXva threads)', () => {
  it('backs up as XVA to a plain and an encrypted remote and restores each as the source', async () => {
    const vm = sim.listVms()[0]!
    const xapi = { url: sim.url, credentials: { username: sim.user, password: sim.password } }
    const task: TaskInputOf<'backup.run'> = { kind: 'backup.run', job: { id: 'qfull', name: 'qfull', mode: 'full', compression: 'native', vms: { uuid: [vm.uuid] }, settings: { '': {} } }, schedule: { id: 'qs' }, remotes, xapis: { sim: xapi } }
    const poolRuns = vi.spyOn(proxy.pool, 'run')
    const handle = await client.enqueue({ proxy: proxyId }, task)
    const s = await handle.result()
    expect(s.status, JSON.stringify(s.tasks, null, 1)).toBe('success')
    expect(poolRuns.mock.calls.map((c) => c[0])).toEqual(['backup.xva'])
    const ts = (s.tasks?.[0]?.result as { timestamp: string }).timestamp
    const shas = await Promise.all(vm.vdis.map((v) => sha(v.uuid)))
    expect((await readdir(join(dir.path, 'plain', 'xo-vm-backups', vm.uuid))).sort()).toEqual([`${ts}.json`, `${ts}.xva`, `${ts}.xva.checksum`, 'cache.json.gz'])
    const encNames = await readdir(join(dir.path, 'enc', 'xo-vm-backups', vm.uuid))
    expect(encNames).toContain(`${ts}.xva`)
    expect(encNames).not.toContain(`${ts}.xva.checksum`)

    sim.writeBlocks(vm.uuid, { blocks: 3 })
    const sr = (await import('../../src/xapi/client.js')).XapiClient
    const x = await sr.connect({ url: sim.url, user: sim.user, password: sim.password })
    try {
      for (const remoteId of ['plain', 'enc']) {
        const restore: TaskInputOf<'backup.restore'> = { kind: 'backup.restore', remoteId, remote: remotes[remoteId]!, metadataPath: metadataPath(vm.uuid, ts), xapi, srUuid: x.listSrs()[1]!.uuid }
        const r = await (await client.enqueue({ proxy: proxyId }, restore)).result()
        expect(r.status, JSON.stringify(r, null, 1)).toBe('success')
        const result = r.result as unknown as RestoreToSrResult
        expect(await Promise.all(result.vdis.map((v) => sha(v.uuid)))).toEqual(shas)
      }
      expect(poolRuns.mock.calls.map((c) => c[0])).toEqual(['backup.xva', 'backup.restoreXva', 'backup.restoreXva'])
    } finally {
      poolRuns.mockRestore()
      await x.close()
    }
  }, 120_000)
})

/**
 * Per-target failure isolation of a full backup: three targets get the same XVA export at once; one of
 * them cannot publish (a directory already sits at the XVA's name, which the run's naming makes
 * predictable: after the newest backup on any target). That target is dropped with its temporary
 * removed and no metadata; the two others get the whole backup; the run reports the failed target.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { runBackup } from '../../src/backup/run.js'
import { parseTask, type BackupRunTask } from '../../src/queue/tasks.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, MiB, startSim } from '../backup/helpers/fixture.js'

let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }

beforeAll(async () => {
  dir = await makeTempDir()
  sim = await startSim({ diskSizeBytes: 8 * MiB })
})
afterAll(async () => {
  await sim.close()
  await dir.remove()
})

describe('full backup: a failing target is dropped, the others complete', () => {
  it('publishes on two targets while the third fails and keeps nothing of it', async () => {
    const vm = sim.listVms()[0]!
    for (const r of ['a', 'b', 'c']) await mkdir(join(dir.path, r, 'xo-vm-backups', vm.uuid), { recursive: true })
    // an older backup of another schedule dated 2099 on c: this run is named 20990101T000001Z everywhere
    const cDir = join(dir.path, 'c', 'xo-vm-backups', vm.uuid)
    await writeFile(join(cDir, '20990101T000000Z.json'), JSON.stringify({ jobId: 'other', mode: 'full', scheduleId: 'other', timestamp: Date.UTC(2099, 0, 1), version: '2.0.0', vm: { uuid: vm.uuid }, vmSnapshot: {}, xva: './20990101T000000Z.xva', size: 0, tags: [] }))
    await mkdir(join(cDir, '20990101T000001Z.xva'))
    const task = parseTask({
      kind: 'backup.run',
      job: { id: 'iso', name: 'iso', mode: 'full', compression: 'zstd', vms: { uuid: [vm.uuid] }, settings: { '': {} } },
      schedule: { id: 'isos' },
      remotes: Object.fromEntries(['a', 'b', 'c'].map((r) => [r, { url: `file://${dir.path}/${r}` }])),
      xapis: { main: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
    }) as BackupRunTask
    const s = await runBackup(task, { defaults, exporter: runDiskExport, signal: new AbortController().signal })
    const result = s.tasks?.[0]?.result as { timestamp: string; succeeded: string[]; failed: string[] }
    expect(result.timestamp).toBe('20990101T000001Z')
    expect(result.succeeded).toEqual(['a', 'b'])
    expect(result.failed).toEqual(['c'])
    for (const r of ['a', 'b']) {
      expect((await readdir(join(dir.path, r, 'xo-vm-backups', vm.uuid))).sort()).toEqual(['20990101T000001Z.json', '20990101T000001Z.xva', '20990101T000001Z.xva.checksum', 'cache.json.gz'])
    }
    const left = (await readdir(cDir)).sort()
    expect(left).toEqual(['20990101T000000Z.json', '20990101T000001Z.xva'])
    expect(await readdir(join(cDir, '20990101T000001Z.xva'))).toEqual([])
  }, 120_000)
})

/**
 * Mirror backup between two local remotes against `cp -r` of the same source tree, in the same run.
 *
 * The source remote holds one VM's delta chain (a full of `1 GiB × BENCH_SCALE` disk half filled, then
 * three deltas of ~10 % of the blocks each), made by our engine from the in-process simulator (not
 * measured). Measured: the mirror of every backup to an empty VhdFile target (plan, each VHD opened and
 * checked, copied by the kernel to a temporary name (Remote.copyFrom), size checked, published, metadata
 * and cache), with the copies on this thread (the proxy runs the same code in a stream-pool thread),
 * against `cp -r` of the source directory (the floor: no validation, no atomic publish), measured after
 * one such copy not measured (see below). Bytes: the source tree's size.
 */
import { mkdir, readdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { runDiskExport } from '../src/backup/disk-export.js'
import { inlineCopier, runMirror } from '../src/backup/mirror.js'
import { runBackup } from '../src/backup/run.js'
import { backupSchema } from '../src/config/schema.js'
import { parseTask, type BackupMirrorTask, type BackupRunTask } from '../src/queue/tasks.js'
import { startXapiSimulator } from '../src/xapi/sim/index.js'
import { GiB, measure, runCommand, type BenchContext, type BenchRow } from './lib.js'
import { xapiClosesSettled } from '../src/backup/xapi-closes.js'

async function treeBytes(dir: string): Promise<number> {
  let total = 0
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) total += (await stat(join(e.parentPath, e.name))).size
  return total
}

export default async function bench(ctx: BenchContext): Promise<BenchRow[]> {
  const defaults = backupSchema.parse({})
  const diskSizeBytes = Math.max(64 * 1024 * 1024, Math.round((GiB * ctx.scale) / (2 * 1024 * 1024)) * 2 * 1024 * 1024)
  const sim = await startXapiSimulator({ vms: 1, disksPerVm: 1, diskSizeBytes, fillRatio: 0.5, seed: 11 })
  const [src, dst, cpDst] = ['src', 'dst', 'cp'].map((d) => join(ctx.tmpDir, d)) as [string, string, string]
  await mkdir(src)
  try {
    const vm = sim.listVms()[0]!.uuid
    const task = parseTask({
      kind: 'backup.run',
      job: { id: 'bench', mode: 'delta', vms: { uuid: [vm] }, settings: { '': { exportRetention: 50 } } },
      schedule: { id: 's' },
      remotes: { r: { url: `file://${src}` } },
      xapis: { x: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
    }) as BackupRunTask
    for (let i = 0; i < 4; i++) {
      if (i > 0) sim.writeBlocks(vm, { ratio: 0.1 })
      const s = await runBackup(task, { defaults, exporter: runDiskExport, signal: new AbortController().signal })
      if (s.status !== 'success') throw new Error(`bench source backup failed: ${JSON.stringify(s)}`)
    }
    const bytes = await treeBytes(src)
    ctx.log(`source: ${(bytes / GiB).toFixed(2)} GiB in 1 full + 3 deltas`)
    const rows: BenchRow[] = []
    // one copy first, not measured: the first writer of this much on the tmpfs pays the kernel's new pages
    // (4x slower for an 8 GiB tree than a second copy); the mirror, run after the copy is removed, never did
    await runCommand(`cp -r '${src}' '${cpDst}'`)
    await rm(cpDst, { recursive: true })
    const cp = await runCommand(`cp -r '${src}' '${cpDst}'`)
    rows.push({ group: 'mirror', name: 'cp -r (floor)', bytes, seconds: cp.seconds, cpuSeconds: cp.cpuSeconds, peakRssMiB: cp.peakRssMiB })
    await rm(cpDst, { recursive: true })
    await mkdir(dst)
    const mirror = parseTask({ kind: 'backup.mirror', job: { id: 'm', mode: 'delta', sourceRemote: 'src', settings: { '': { exportRetention: 50 } } }, schedule: { id: 'ms' }, remotes: { src: { url: `file://${src}` }, dst: { url: `file://${dst}` } } }) as BackupMirrorTask
    const m = await measure(async () => {
      const s = await runMirror(mirror, { defaults, copier: inlineCopier, signal: new AbortController().signal })
      if (s.status !== 'success') throw new Error(`bench mirror failed: ${JSON.stringify(s)}`)
    })
    rows.push({ group: 'mirror', name: 'mirror delta chain → local', bytes, ...m, baseline: 'cp -r (floor)' })
    return rows
  } finally {
    await xapiClosesSettled() // the runs' XAPI connections close in the background
    await sim.close()
  }
}

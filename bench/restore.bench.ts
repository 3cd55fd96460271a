/**
 * Whole-VM restore (importVmBackup) of one disk of 8 GiB × BENCH_SCALE, 50 % allocated, into the XAPI
 * simulator (its own process), from a VhdFile remote and from a VhdDirectory + brotli remote, against
 * the ceiling measured in the same run: `curl -T <the same VhdFile> <import URL>` into a fresh VDI
 * (after one such import not measured, which the simulator's heap growth falls on).
 *
 * The backups are made first (not measured). The restore runs on this process's thread (the inline
 * importer, the same code a pool thread runs), so its CPU is this process's; the simulator's CPU per
 * GiB is in `extra`. Peak RSS of a restore row is this process's high-water mark reset just before it
 * (`/proc/self/clear_refs` 5, read back as VmHWM), so the backup phase does not count.
 */
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { inlineImporter } from '../src/backup/disk-import.js'
import { runDiskExport } from '../src/backup/disk-export.js'
import { destroyVmAndDisks } from '../src/backup/health-check.js'
import { importVmBackup, type RestoreLog } from '../src/backup/import-vm-backup.js'
import { metadataPath } from '../src/backup/layout.js'
import { runBackup } from '../src/backup/run.js'
import { backupSchema } from '../src/config/schema.js'
import { parseTask, type BackupRunTask } from '../src/queue/tasks.js'
import { createRemote } from '../src/remotes/index.js'
import { XapiClient } from '../src/xapi/client.js'
import { GiB, MiB, procCpuSeconds, runCommand, startSimProcess, type BenchContext, type BenchRow } from './lib.js'
import { xapiClosesSettled } from '../src/backup/xapi-closes.js'

const noLog: RestoreLog = { child: () => noLog, info: () => undefined, warning: () => undefined, end: () => undefined }

async function resetPeakRss(): Promise<void> {
  await writeFile('/proc/self/clear_refs', '5')
}

async function peakRssMiB(): Promise<number> {
  const m = /VmHWM:\s+(\d+) kB/.exec(await readFile('/proc/self/status', 'utf8'))
  return Number(m?.[1] ?? 0) / 1024
}

export default async function restoreBench(ctx: BenchContext): Promise<BenchRow[]> {
  const diskSizeBytes = Math.max(1, Math.round(4 * ctx.scale)) * 2 * GiB
  const sim = await startSimProcess({ vms: 1, diskSizeBytes, fillRatio: 0.5 })
  const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  const rows: BenchRow[] = []
  const group = `whole-VM restore ${diskSizeBytes / GiB} GiB disk (50 %)`
  try {
    const vm = xapi.listVms()[0]!
    const remotes = { file: { url: `file://${ctx.tmpDir}/file` }, dir: { url: `file://${ctx.tmpDir}/dir`, options: { useVhdDirectory: true } } }
    const task = parseTask({
      kind: 'backup.run',
      job: { id: 'bench', name: 'bench', mode: 'delta', vms: { uuid: [vm.uuid] }, settings: { '': {} } }, // VhdDirectory blocks: backup.vhdDirectoryCompression, brotli by default
      schedule: { id: 's' },
      remotes,
      xapis: { sim: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
    }) as BackupRunTask
    for (const d of ['file', 'dir']) await mkdir(join(ctx.tmpDir, d))
    ctx.log(`backing up ${diskSizeBytes / GiB} GiB (not measured)…`)
    const summary = await runBackup(task, { defaults: backupSchema.parse({}), exporter: (input, o) => runDiskExport(input, { signal: o.signal }), signal: new AbortController().signal })
    if (summary.status !== 'success') throw new Error(`the backup failed: ${JSON.stringify(summary.result)}`)
    const ts = (summary.tasks?.[0]?.result as { timestamp: string }).timestamp
    const path = metadataPath(vm.uuid, ts)
    const sr = xapi.listSrs()[0]!

    // ceiling: curl -T of the VhdFile into a fresh VDI
    const meta = JSON.parse(await readFile(join(ctx.tmpDir, 'file', path), 'utf8')) as { vhds: Record<string, string> }
    const vhdFile = join(ctx.tmpDir, 'file', 'xo-vm-backups', vm.uuid, Object.values(meta.vhds)[0]!)
    const vhdBytes = (await stat(vhdFile)).size
    const curlImport = async (): Promise<{ c: Awaited<ReturnType<typeof runCommand>>; simCpu: number }> => {
      const vdiRef = await xapi.createVdi({ srRef: sr.$ref, nameLabel: 'curl target', virtualSizeBytes: diskSizeBytes })
      const url = `${sim.url}/import_raw_vdi?session_id=${encodeURIComponent(xapi.sessionId)}&vdi=${encodeURIComponent(vdiRef)}&format=vhd`
      const cpu0 = await procCpuSeconds(sim.pid)
      const c = await runCommand(`curl -sS -T '${vhdFile}' -w ' %{http_code}' '${url}'`)
      if (!c.stdout.trim().endsWith(' 200') && c.stdout.trim() !== '200') throw new Error(`curl -T: the import answered ${c.stdout.trim()}`)
      const simCpu = (await procCpuSeconds(sim.pid)) - cpu0
      await xapi.destroyVdi(vdiRef)
      return { c, simCpu }
    }
    // one import first, not measured: the simulator's first import of the disk grows its heap by the
    // disk's data (~4 CPU s/GiB more at 8 GiB), which would otherwise fall on whichever row runs first
    await curlImport()
    const { c, simCpu: curlSimCpu } = await curlImport()
    let simCpu = curlSimCpu
    let simCpu0: number
    rows.push({ group, name: 'curl -T VhdFile → import', bytes: vhdBytes, seconds: c.seconds, cpuSeconds: c.cpuSeconds, peakRssMiB: c.peakRssMiB, extra: { simCpuSPerGiB: simCpu / (vhdBytes / GiB) } })
    ctx.log(`curl -T: ${(vhdBytes / MiB / c.seconds).toFixed(0)} MiB/s`)

    for (const [id, r] of Object.entries(remotes)) {
      const remote = createRemote(r.url, 'options' in r ? r.options : {})
      await remote.open()
      try {
        await resetPeakRss()
        simCpu0 = await procCpuSeconds(sim.pid)
        const cpu0 = process.cpuUsage()
        const faults0 = process.resourceUsage().minorPageFault
        const t0 = performance.now()
        const result = await importVmBackup({ remote, remoteSpec: { url: r.url, options: 'options' in r ? r.options : {} }, metadataPath: path, xapi, srUuid: sr.uuid, importer: inlineImporter, signal: new AbortController().signal })
        const seconds = (performance.now() - t0) / 1000
        const cpu = process.cpuUsage(cpu0)
        const minorFaults = process.resourceUsage().minorPageFault - faults0
        simCpu = (await procCpuSeconds(sim.pid)) - simCpu0
        const name = id === 'file' ? 'importVmBackup from VhdFile' : 'importVmBackup from VhdDirectory+brotli'
        rows.push({ group, name, bytes: result.sizeBytes, seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, peakRssMiB: await peakRssMiB(), baseline: 'curl -T VhdFile → import', extra: { simCpuSPerGiB: simCpu / (result.sizeBytes / GiB), userCpuSPerGiB: cpu.user / 1e6 / (result.sizeBytes / GiB), minorFaults } })
        ctx.log(`${name}: ${(result.sizeBytes / MiB / seconds).toFixed(0)} MiB/s, user ${(cpu.user / 1e6).toFixed(2)} s, sys ${(cpu.system / 1e6).toFixed(2)} s, ${minorFaults} minor faults`)
        const restored = await xapi.waitObject('VM', result.restoredVmUuid)
        await destroyVmAndDisks(xapi, restored.$ref, noLog)
      } finally {
        await remote.close()
      }
    }
  } finally {
    await xapi.close()
    await xapiClosesSettled() // the runs' XAPI connections close in the background
    await sim.stop()
  }
  return rows
}

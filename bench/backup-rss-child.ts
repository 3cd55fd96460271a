/**
 * The measured process of backup-rss.bench.ts, run compiled under plain node (as the proxy ships: no
 * TypeScript loader in any thread): one `backup.run` of the VMs named in BENCH_RSS_TASK (a backup.run
 * task as JSON) with its disks streamed by a StreamPool of BENCH_RSS_THREADS threads. Prints one JSON
 * line: bytes read, seconds, CPU seconds (every thread), disks in flight at most, the RSS before the run
 * (threads booted) and the process's peak RSS (VmHWM: main thread + stream threads).
 */
import { readFile } from 'node:fs/promises'
import { poolExporter } from '../src/backup/pool-exporter.js'
import type { DiskExporter } from '../src/backup/ports.js'
import { runBackup } from '../src/backup/run.js'
import { backupSchema } from '../src/config/schema.js'
import { parseTask, type BackupRunTask } from '../src/queue/tasks.js'
import { StreamPool } from '../src/workers/pool.js'

async function vmHwmMiB(): Promise<number> {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(await readFile('/proc/self/status', 'utf8'))
  if (m === null) throw new Error('no VmHWM in /proc/self/status')
  return Number(m[1]) / 1024
}

const task = parseTask(JSON.parse(process.env.BENCH_RSS_TASK ?? 'null')) as BackupRunTask
const pool = new StreamPool({ threads: Number(process.env.BENCH_RSS_THREADS ?? '4') })
try {
  // one no-op task per thread: every thread booted and its task modules loaded, so the RSS before the
  // run is the idle proxy's
  await Promise.all(Array.from({ length: pool.stats.threads }, (_, value) => pool.run('standin.noop', { value })))
  const inner = poolExporter(pool)
  let bytes = 0
  let inFlight = 0
  let maxInFlight = 0
  const exporter: DiskExporter = async (input, options) => {
    maxInFlight = Math.max(maxInFlight, ++inFlight)
    try {
      const r = await inner(input, options)
      bytes += r.readBytes
      return r
    } finally {
      inFlight--
    }
  }
  const startRssMiB = process.memoryUsage().rss / 2 ** 20
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const summary = await runBackup(task, { defaults: backupSchema.parse({}), exporter, signal: new AbortController().signal })
  const seconds = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  if (summary.status !== 'success') throw new Error(`the backup run ended with ${summary.status}: ${JSON.stringify(summary)}`)
  console.log(JSON.stringify({ bytes, seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, disksInFlight: maxInFlight, startRssMiB, peakRssMiB: await vmHwmMiB() }))
} finally {
  await pool.close()
}

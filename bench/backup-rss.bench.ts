/**
 * Proxy memory bench: the RSS of `serve` idle, and its peak with 2 VMs × 2 disks in flight, at two disk
 * sizes, to show it does not grow with the disk (the issue's check is 8 and 64 GiB, sparse 50%):
 *
 *   BENCH_RSS_DISK_GIB=8,64 npm run bench -- backup-rss     # the issue's sizes (minutes: 2 × 4 × 32 GiB)
 *   npm run bench -- backup-rss                             # default 0.5,2 GiB × BENCH_SCALE (seconds)
 *
 * The measured process is the proxy as it ships: the sources compiled (tsc, into .bench-tmp/) and run by
 * plain node (backup-rss-child.ts runs `serve()`: HTTP endpoints, BullMQ workers on a private
 * redis-server, the engine's processors, a stream pool of 4 streams, on threads
 * started on demand, at most one per CPU core: 2 threads of 2 streams on 2 cores). One fresh proxy
 * per size: once idle its RSS is read (idleRssMiB, with the threads alive then: idleThreads), then a
 * delta-mode `backup.run` of 2 VMs with 2 disks each (concurrency 2, diskPerVmConcurrency 0 = all disks at
 * once) to one local remote is enqueued into its queue like an orchestrator would; once the job's result
 * is in, the proxy reports its peak RSS (VmHWM: main thread + stream threads) and CPU. Bytes are the
 * transfer tasks' sizes in the job's summary (the data written to the remote); the time is enqueue →
 * result. The simulator and Redis run in their own processes and are not counted.
 *
 * Storage: the remote sits on tmpfs and a hole puncher (`fallocate --punch-hole`, every 250 ms) frees
 * the data of every large file written so far, so 4 × 32 GiB never has to fit in memory or on disk; the
 * proxy's writes are unchanged (the written VHDs are not checked here: the tests do that).
 */
import { spawn } from 'node:child_process'
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { compileConfig } from '../src/config/index.js'
import { EnqueueClient } from '../src/queue/client.js'
import { SealKey } from '../src/queue/seal.js'
import type { TaskInputOf } from '../src/queue/tasks.js'
import type { TaskSummary } from '../src/queue/task-log.js'
import { startRedis } from '../test/services/redis.js'
import { GiB, runCommand, startSimProcess, type BenchContext, type BenchRow } from './lib.js'

/** streams at once (`workers.threads`) of the measured proxy (BENCH_RSS_THREADS overrides, to see what a stream adds) */
const THREADS = Number(process.env.BENCH_RSS_THREADS ?? '4')
const repo = fileURLToPath(new URL('..', import.meta.url))

/** Frees the data of the large files under `dir` as they are written; stop() ends it. */
function startHolePuncher(dir: string): { stop: () => Promise<void> } {
  const script = `while :; do find "$1" -type f -size +16M -exec sh -c 'for f; do fallocate --punch-hole --offset 0 --length "$(stat -c %s "$f")" "$f"; done' _ {} + 2>/dev/null; sleep 0.25; done`
  const child = spawn('sh', ['-c', script, 'punch', dir], { stdio: 'ignore' })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  return {
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM')
      await exited
    },
  }
}

/** Compiles src/ and the child into `dir` (a package.json copy beside them: ESM, and the version). */
async function build(dir: string): Promise<void> {
  await writeFile(
    join(dir, 'tsconfig.json'),
    JSON.stringify({ extends: join(repo, 'tsconfig.json'), compilerOptions: { noEmit: false, declaration: false, sourceMap: false, rootDir: repo, outDir: dir }, include: [join(repo, 'src'), join(repo, 'bench/backup-rss-child.ts')] }),
  )
  await copyFile(join(repo, 'package.json'), join(dir, 'package.json'))
  await runCommand(`npx tsc -p '${join(dir, 'tsconfig.json')}'`)
}

function sizesGiB(scale: number): number[] {
  const env = process.env.BENCH_RSS_DISK_GIB
  if (env === undefined || env === '') return [0.5 * scale, 2 * scale]
  const sizes = env.split(',').map(Number)
  if (sizes.some((s) => !(s > 0))) throw new Error(`BENCH_RSS_DISK_GIB must be sizes in GiB separated by commas, got "${env}"`)
  return sizes
}

interface IdleReport {
  idleRssMiB: number
  idleThreads: number
  idleHeapMiB: number
}

interface RunReport {
  peakRssMiB: number
  cpuSeconds: number
  disksInFlight: number
  maxThreads: number
  mainHeapMiB: number
  mainBuffersMiB: number
}

/** Bytes written by a job: the sizes its transfer tasks report. */
function transferredBytes(task: TaskSummary): number {
  const own = task.message === 'transfer' && typeof task.result === 'object' && task.result !== null && !Array.isArray(task.result) && typeof task.result.size === 'number' ? task.result.size : 0
  return own + (task.tasks ?? []).reduce((sum, t) => sum + transferredBytes(t), 0)
}

/** One proxy process: idle RSS, then one backup.run enqueued into its queue, then its peak. */
async function measureProxy(script: string, redisUrl: string, task: TaskInputOf<'backup.run'>): Promise<IdleReport & RunReport & { bytes: number; seconds: number }> {
  const sealKey = SealKey.generate()
  const proxyId = `rss-bench-${process.pid}-${Date.now()}`
  const raw = { redis: { url: redisUrl }, proxy: { id: proxyId }, workers: { threads: THREADS, concurrency: 1 }, http: { listen: '127.0.0.1:0' }, security: { sealKey: sealKey.export() }, log: { level: 'silent' } }
  const child = spawn(process.execPath, [script], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, BENCH_RSS_CONFIG: JSON.stringify(raw) } })
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]()
  const next = async <T>(): Promise<T> => {
    const line = await Promise.race([lines.next(), exited.then((code) => ({ done: true as const, value: `exited with ${code}` }))])
    if (line.done === true) throw new Error(`the measured proxy process ended early: ${String(line.value)}`)
    return JSON.parse(line.value) as T
  }
  const client = new EnqueueClient({ redis: compileConfig(raw).redis, sealKey })
  try {
    const idle = await next<IdleReport>()
    const t0 = performance.now()
    const summary = await (await client.enqueue({ proxy: proxyId }, task, { attempts: 1 })).result()
    const seconds = (performance.now() - t0) / 1000
    if (summary.status !== 'success') throw new Error(`the backup run ended with ${summary.status}: ${JSON.stringify(summary.error ?? summary)}`)
    child.stdin.write('stop\n')
    const run = await next<RunReport>()
    const code = await exited
    if (code !== 0) throw new Error(`the measured proxy process exited with ${code}`)
    return { ...idle, ...run, bytes: transferredBytes(summary), seconds }
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL')
    await client.close()
  }
}

export default async function bench(ctx: BenchContext): Promise<BenchRow[]> {
  const rows: BenchRow[] = []
  await mkdir(join(repo, '.bench-tmp'), { recursive: true })
  const buildDir = await mkdtemp(join(repo, '.bench-tmp', 'rss-'))
  const redis = await startRedis()
  try {
    await build(buildDir)
    for (const gib of sizesGiB(ctx.scale)) {
      const diskSizeBytes = Math.max(64 * 1024 * 1024, Math.round((gib * GiB) / (2 * 1024 * 1024)) * 2 * 1024 * 1024)
      const sim = await startSimProcess({ vms: 2, disksPerVm: 2, diskSizeBytes, fillRatio: 0.5 })
      const remote = join(ctx.tmpDir, `rss-${gib}`)
      await mkdir(remote, { recursive: true })
      const puncher = startHolePuncher(remote)
      try {
        const vms = (await (await fetch(`${sim.url}/sim/vms`, { headers: { authorization: `Basic ${Buffer.from(`${sim.user}:${sim.password}`).toString('base64')}` } })).json()) as { uuid: string }[]
        const task: TaskInputOf<'backup.run'> = {
          kind: 'backup.run',
          job: { id: `rss-${gib}`, name: 'rss bench', mode: 'delta', vms: { uuid: vms.map((v) => v.uuid) }, settings: { '': { concurrency: 2, diskPerVmConcurrency: 0 } } },
          schedule: { id: 'rss' },
          remotes: { r1: { url: `file://${remote}` } },
          xapis: { main: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
        }
        ctx.log(`serve, 2 VMs × 2 disks of ${diskSizeBytes / GiB} GiB (50% allocated), up to ${THREADS} streams at once, one local remote, compiled, plain node`)
        const r = await measureProxy(join(buildDir, 'bench', 'backup-rss-child.js'), redis.url, task)
        rows.push({
          group: 'backup memory (serve, 2 VMs × 2 disks in flight)',
          name: `disks of ${diskSizeBytes / GiB} GiB`,
          bytes: r.bytes,
          seconds: r.seconds,
          cpuSeconds: r.cpuSeconds,
          peakRssMiB: r.peakRssMiB,
          extra: { disksInFlight: r.disksInFlight, threads: r.maxThreads, idleRssMiB: r.idleRssMiB, idleThreads: r.idleThreads, idleHeapMiB: r.idleHeapMiB, mainHeapMiB: r.mainHeapMiB, mainBuffersMiB: r.mainBuffersMiB },
        })
      } finally {
        await puncher.stop()
        await sim.stop()
        await rm(remote, { recursive: true, force: true })
      }
    }
  } finally {
    await redis.destroy()
    await rm(buildDir, { recursive: true, force: true })
  }
  return rows
}

/**
 * Backup engine memory bench: peak RSS of the proxy with 2 VMs × 2 disks in flight, at two disk sizes,
 * to show it does not grow with the disk (the issue's check is 8 and 64 GiB, sparse 50%):
 *
 *   BENCH_RSS_DISK_GIB=8,64 npm run bench -- backup-rss     # the issue's sizes (minutes: 2 × 4 × 32 GiB)
 *   npm run bench -- backup-rss                             # default 0.5,2 GiB × BENCH_SCALE (seconds)
 *
 * The measured process is the proxy's engine as it ships: the sources compiled (tsc, into .bench-tmp/)
 * and run by plain node (backup-rss-child.ts): `runBackup` of a delta-mode job over 2 VMs with 2 disks
 * each (concurrency 2, diskPerVmConcurrency 0 = all disks at once), the disks streamed by the
 * `backup.disk` task in a StreamPool of 4 threads, to one local remote. One fresh process per size; its
 * peak RSS (VmHWM) counts the main thread and the stream threads. The simulator runs in its own
 * process and is not counted.
 *
 * Storage: the remote sits on tmpfs and a hole puncher (`fallocate --punch-hole`, every 250 ms) frees
 * the data of every large file written so far, so 4 × 32 GiB never has to fit in memory or on disk; the
 * proxy's writes are unchanged (the written VHDs are not checked here: the tests do that).
 */
import { spawn } from 'node:child_process'
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { GiB, runCommand, startSimProcess, type BenchContext, type BenchRow } from './lib.js'

const THREADS = 4
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

interface ChildResult {
  bytes: number
  seconds: number
  cpuSeconds: number
  disksInFlight: number
  startRssMiB: number
  peakRssMiB: number
}

async function runChild(script: string, task: unknown): Promise<ChildResult> {
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, BENCH_RSS_TASK: JSON.stringify(task), BENCH_RSS_THREADS: String(THREADS) } })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  if (code !== 0) throw new Error(`the measured proxy process exited with ${code}: ${out}`)
  return JSON.parse(out.trim().split('\n').pop() ?? '') as ChildResult
}

export default async function bench(ctx: BenchContext): Promise<BenchRow[]> {
  const rows: BenchRow[] = []
  await mkdir(join(repo, '.bench-tmp'), { recursive: true })
  const buildDir = await mkdtemp(join(repo, '.bench-tmp', 'rss-'))
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
        const task = {
          kind: 'backup.run',
          job: { id: `rss-${gib}`, name: 'rss bench', mode: 'delta', vms: { uuid: vms.map((v) => v.uuid) }, settings: { '': { concurrency: 2, diskPerVmConcurrency: 0 } } },
          schedule: { id: 'rss' },
          remotes: { r1: { url: `file://${remote}` } },
          xapis: { main: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
        }
        ctx.log(`2 VMs × 2 disks of ${diskSizeBytes / GiB} GiB (50% allocated), ${THREADS} stream threads, one local remote, compiled, plain node`)
        const r = await runChild(join(buildDir, 'bench', 'backup-rss-child.js'), task)
        rows.push({
          group: 'backup memory (2 VMs × 2 disks in flight)',
          name: `disks of ${diskSizeBytes / GiB} GiB`,
          bytes: r.bytes,
          seconds: r.seconds,
          cpuSeconds: r.cpuSeconds,
          peakRssMiB: r.peakRssMiB,
          extra: { disksInFlight: r.disksInFlight, idleRssMiB: r.startRssMiB },
        })
      } finally {
        await puncher.stop()
        await sim.stop()
        await rm(remote, { recursive: true, force: true })
      }
    }
  } finally {
    await rm(buildDir, { recursive: true, force: true })
  }
  return rows
}

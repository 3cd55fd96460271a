/**
 * Benchmark harness shared by every bench/*.bench.ts file.
 *
 * A bench file default-exports `async (ctx) => BenchRow[]`. Each row is one measured case; a case that
 * has a baseline (plain cp, curl, smbclient, nfs-cp, rclone, plain BullMQ...) names it in `baseline` and
 * the runner prints the ratio. CPU is measured as this process's CPU (process.cpuUsage) for in-process
 * cases, and as the command's user+sys time for
 * external tools (GNU time), so both sides of a comparison are counted the same way. Peak RSS is the
 * process's high-water mark (resourceUsage().maxRSS) or the command's max RSS.
 *
 * Sizes: BENCH_SCALE (default 1) multiplies each file's default size so CI-sized smoke runs and full
 * runs use the same code.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdtemp, open, readFile, rm } from 'node:fs/promises'
import type { Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface BenchRow {
  group: string
  name: string
  bytes: number
  seconds: number
  /** CPU seconds (user+sys) spent by what was measured */
  cpuSeconds: number
  /** peak RSS in MiB of what was measured, when known */
  peakRssMiB?: number
  /** name of the row (same group) this one is compared with */
  baseline?: string
  /** extra figures (latency p50, jobs/s...) printed as they are */
  extra?: Record<string, number | string>
}

export interface BenchContext {
  scale: number
  /** a scratch dir on tmpfs when available (/dev/shm), removed after the file */
  tmpDir: string
  log: (line: string) => void
}

export type BenchFile = (ctx: BenchContext) => Promise<BenchRow[]>

export const MiB = 1024 * 1024
export const GiB = 1024 * MiB

/** Measures an in-process async function: wall time, CPU of this process, peak RSS of this process. */
export async function measure(fn: () => Promise<void>): Promise<{ seconds: number; cpuSeconds: number; peakRssMiB: number }> {
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await fn()
  const seconds = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  return { seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, peakRssMiB: process.resourceUsage().maxRSS / 1024 }
}

/**
 * Runs an external command (through `sh -c`) under GNU time and measures it: wall seconds, user+sys CPU
 * of the command and its children, and peak RSS of the largest process.
 */
export async function runCommand(command: string, options: { env?: NodeJS.ProcessEnv } = {}): Promise<{ seconds: number; cpuSeconds: number; peakRssMiB: number; stdout: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'bp-bench-time-'))
  const timeFile = join(dir, 'time')
  try {
    const child = spawn('/usr/bin/time', ['-f', '%e %U %S %M', '-o', timeFile, 'sh', '-c', command], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: options.env ?? process.env,
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)))
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
    if (code !== 0) throw new Error(`command failed (${code}): ${command}\n${stderr}`)
    const [e, u, s, m] = (await readFile(timeFile, 'utf8')).trim().split('\n').pop()!.split(' ').map(Number)
    return { seconds: e ?? 0, cpuSeconds: (u ?? 0) + (s ?? 0), peakRssMiB: (m ?? 0) / 1024, stdout }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** CPU seconds (user + sys) a process has used so far, from /proc/<pid>/stat (Linux). */
export async function procCpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // utime and stime are fields 14 and 15 (1-based) of the whole line, 12 and 13 after "pid (comm) "
  return (Number(fields[11]) + Number(fields[12])) / 100
}

interface SimProcess {
  url: string
  pid: number
  user: string
  password: string
  stop(): Promise<void>
}

/**
 * Starts `backup-proxy xapi-sim` in its own process (its CPU and memory are not the measured process's;
 * `procCpuSeconds(sim.pid)` reports its CPU).
 */
export async function startSimProcess(o: { vms: number; disksPerVm?: number; diskSizeBytes: number; fillRatio: number; seed?: number }): Promise<SimProcess> {
  const user = 'root'
  const password = 'bench-password'
  const args = ['bin/backup-proxy.js', 'xapi-sim', '--vms', String(o.vms), '--disks-per-vm', String(o.disksPerVm ?? 1), '--disk-size', String(o.diskSizeBytes)]
  args.push('--fill-ratio', String(o.fillRatio), '--seed', String(o.seed ?? 7), '--listen', '127.0.0.1:0', '--user', user, '--password', password)
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let out = ''
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /listening on (\S+)/.exec(out)
      if (m?.[1] !== undefined) resolve(m[1])
    })
    child.once('exit', (code) => reject(new Error(`xapi-sim exited (${code}): ${out}`)))
  })
  return {
    url,
    pid: child.pid as number,
    user,
    password,
    stop: async () => {
      if (child.exitCode !== null) return
      child.kill('SIGTERM')
      await exited
    },
  }
}

export function mibps(row: Pick<BenchRow, 'bytes' | 'seconds'>): number {
  return row.bytes / MiB / row.seconds
}

export function cpuPerGiB(row: Pick<BenchRow, 'bytes' | 'cpuSeconds'>): number {
  return row.cpuSeconds / (row.bytes / GiB)
}

/** Writes `sizeBytes` of incompressible data to `path` (an 8 MiB random pattern repeated), honouring backpressure. */
export async function makeRandomFile(path: string, sizeBytes: number): Promise<void> {
  const block = randomBytes(8 * MiB)
  const out = createWriteStream(path)
  for (let left = sizeBytes; left > 0; left -= block.length) {
    const part = left >= block.length ? block : block.subarray(0, left)
    if (!out.write(part)) await new Promise<void>((r) => out.once('drain', () => r()))
  }
  out.end()
  await new Promise<void>((resolve, reject) => out.on('finish', resolve).on('error', reject))
}

/**
 * Feeds a file into a writer through one reused 4 MiB buffer, waiting for each write's callback (how
 * nfs-cp and smbclient read their source): the source costs the same on both sides of a comparison, and
 * the remote writer copying each chunk before calling back is what makes the reuse safe.
 */
export async function feedFileOneBuffer(path: string, out: Writable): Promise<void> {
  const fh = await open(path, 'r')
  const buffer = Buffer.allocUnsafe(4 * MiB)
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buffer, 0, buffer.length, null)
      if (bytesRead === 0) break
      await new Promise<void>((resolve, reject) => out.write(buffer.subarray(0, bytesRead), (e) => (e ? reject(e) : resolve())))
    }
    out.end()
    await finished(out)
  } catch (error) {
    out.destroy(error as Error)
    throw error
  } finally {
    await fh.close()
  }
}

/**
 * A pool of proxies at scale: one scheduler enqueues a night's jobs at once (one `backup.run` per VM,
 * 300 VMs at BENCH_SCALE=1, each with one small disk from the XAPI simulator) to a pool served by 3
 * `backup-proxy serve` processes, then the same batch to the same pool served by 1 proxy (a fresh
 * simulator with the same seed and an empty remote, so both runs are full backups of the same data).
 *
 * Figures per run: time to drain (first enqueue to last result) and jobs/min; how evenly the proxies
 * shared the work (max/min jobs per proxy, from each summary's `ranBy`); enqueue-to-start p50/p99
 * (BullMQ's processedOn - timestamp of each job); the proxies' peak RSS (VmHWM of each process), CPU and
 * open file descriptors at the end; the machine's 1-minute load average sampled during the drain (the
 * figures depend on what else runs); and, once, Redis memory per queued job (MEMORY USAGE of the keys of the batch enqueued to a queue
 * nobody serves). Before each clock starts, one warm-up job runs through each proxy's own queue. The real engine runs (no stand-ins): snapshot, export, VHD to a local remote on the
 * scratch dir, metadata. Proxies run with the default workers settings (2 threads, concurrency 2);
 * the simulator runs in this process.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, rm } from 'node:fs/promises'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { compileConfig } from '../src/config/index.js'
import { EnqueueClient, type JobHandle } from '../src/queue/client.js'
import { poolQueue } from '../src/queue/names.js'
import { listProxies } from '../src/queue/registry.js'
import { SealKey } from '../src/queue/seal.js'
import type { TaskInputOf } from '../src/queue/tasks.js'
import { startXapiSimulator, type XapiSimulator } from '../src/xapi/sim/index.js'
import { startRedis } from '../test/services/redis.js'
import { MiB, procCpuSeconds, type BenchContext, type BenchRow } from './lib.js'

const DISK_BYTES = 2 * MiB
const root = new URL('../', import.meta.url).pathname

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN
}

interface Proxy {
  id: string
  child: ChildProcess
  exited: Promise<void>
}

function startProxy(id: string, pool: string, redisUrl: string, sealKey: string): Proxy {
  const child = spawn(process.execPath, ['bin/backup-proxy.js', 'serve', '--proxy', id, '--pool', pool, '--redis-url', redisUrl, '--listen', '127.0.0.1:0'], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, BACKUP_PROXY_SECURITY_SEAL_KEY: sealKey, BACKUP_PROXY_LOG_LEVEL: 'warn', BACKUP_PROXY_LOG_PRETTY: 'false' },
  })
  return { id, child, exited: new Promise((resolve) => child.once('exit', () => resolve())) }
}

async function peakRssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) / 1024
}

async function openFds(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length
}

/** Samples the 1-minute load average every 5 s until stopped; returns [min, max]. */
function sampleLoad(): () => [number, number] {
  const samples = [loadavg()[0]!]
  const timer = setInterval(() => samples.push(loadavg()[0]!), 5000)
  return () => {
    clearInterval(timer)
    samples.push(loadavg()[0]!)
    return [Math.min(...samples), Math.max(...samples)]
  }
}

function tasks(sim: XapiSimulator, remoteUrl: string, tag: string): TaskInputOf<'backup.run'>[] {
  return sim.listVms().map((vm, i) => ({
    kind: 'backup.run',
    job: { id: `${tag}-vm${i}`, name: `nightly ${i}`, mode: 'delta', vms: { uuid: [vm.uuid] }, settings: { '': { exportRetention: 2 } } },
    schedule: { id: 'nightly' },
    remotes: { local: { url: remoteUrl } },
    xapis: { sim: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
  }))
}

interface RunResult {
  row: BenchRow
  lines: string[]
}

async function runBatch(ctx: BenchContext, o: { vms: number; proxies: number; redisUrl: string; sealKey: SealKey; name: string }): Promise<RunResult> {
  const remoteDir = join(ctx.tmpDir, `remote-${o.proxies}`)
  await mkdir(remoteDir, { recursive: true })
  await mkdir(`${remoteDir}-warm`, { recursive: true })
  const sim = await startXapiSimulator({ vms: o.vms, disksPerVm: 1, diskSizeBytes: DISK_BYTES, fillRatio: 0.5, seed: 300 })
  const pool = `bench-${randomBytes(3).toString('hex')}`
  const config = compileConfig({ redis: { url: o.redisUrl } })
  const client = new EnqueueClient({ redis: config.redis, sealKey: o.sealKey, attempts: 3, backoffMs: 1000 })
  const proxies = Array.from({ length: o.proxies }, (_, i) => startProxy(`scale${o.proxies}-${i + 1}`, pool, o.redisUrl, o.sealKey.export()))
  try {
    const redis = await client.redis()
    // every proxy serving before the clock starts (start-up is not part of a night's drain)
    for (;;) {
      const live = await listProxies(redis, config.redis.prefix)
      if (proxies.every((p) => live.some((l) => l.proxyId === p.id && l.state === 'running'))) break
      for (const p of proxies) if (p.child.exitCode !== null) throw new Error(`proxy ${p.id} exited with ${p.child.exitCode}`)
      await new Promise((r) => setTimeout(r, 200))
    }
    // warm-up, not measured: one job through each proxy's own queue (JIT, threads, connections)
    const warm = tasks(sim, `file://${remoteDir}-warm`, `${pool}-warm`)
    await Promise.all(proxies.map(async (p, i) => (await client.enqueue({ proxy: p.id }, warm[i]!)).result()))
    const batch = tasks(sim, `file://${remoteDir}`, pool)
    const stopLoad = sampleLoad()
    const t0 = performance.now()
    const handles: JobHandle[] = await Promise.all(batch.map((t) => client.enqueue({ pool }, t)))
    const enqueueSeconds = (performance.now() - t0) / 1000
    const summaries = await Promise.all(handles.map((h) => h.result()))
    const seconds = (performance.now() - t0) / 1000
    const [loadMin, loadMax] = stopLoad()
    const failed = summaries.filter((s) => s.status !== 'success')
    if (failed.length > 0) throw new Error(`${failed.length} job(s) did not succeed, first: ${JSON.stringify(failed[0]!.error ?? failed[0]!.status)}`)
    const perProxy = new Map(proxies.map((p) => [p.id, 0]))
    for (const s of summaries) {
      const id = String(s.ranBy ?? '').split('@')[0]!
      perProxy.set(id, (perProxy.get(id) ?? 0) + 1)
    }
    const q = client.queue(poolQueue(pool))
    const waits: number[] = []
    for (const h of handles) {
      const job = await q.getJob(h.id)
      if (job?.processedOn !== undefined) waits.push(job.processedOn - job.timestamp)
    }
    waits.sort((a, b) => a - b)
    const rss = await Promise.all(proxies.map((p) => peakRssMiB(p.child.pid!)))
    const cpu = await Promise.all(proxies.map((p) => procCpuSeconds(p.child.pid!)))
    const fds = await Promise.all(proxies.map((p) => openFds(p.child.pid!)))
    const counts = [...perProxy.values()]
    const extra = {
      jobs: o.vms,
      jobsPerMin: (o.vms / seconds) * 60,
      enqueueS: enqueueSeconds,
      maxJobsPerProxy: Math.max(...counts),
      minJobsPerProxy: Math.min(...counts),
      startP50Ms: percentile(waits, 50),
      startP99Ms: percentile(waits, 99),
      maxProxyRssMiB: Math.max(...rss),
      maxProxyFds: Math.max(...fds),
      loadAvgMin: loadMin,
      loadAvgMax: loadMax,
    }
    const lines = [
      `${o.name}: ${o.vms} jobs drained in ${seconds.toFixed(1)} s (${extra.jobsPerMin.toFixed(0)} jobs/min; enqueued in ${enqueueSeconds.toFixed(2)} s)`,
      `  jobs per proxy: ${[...perProxy].map(([id, n]) => `${id}=${n}`).join(' ')}`,
      `  enqueue-to-start p50 ${extra.startP50Ms.toFixed(0)} ms, p99 ${extra.startP99Ms.toFixed(0)} ms`,
      `  proxies' peak RSS ${rss.map((r) => r.toFixed(0)).join(', ')} MiB; CPU ${cpu.map((c) => c.toFixed(1)).join(', ')} s; open fds at the end ${fds.join(', ')}`,
      `  load average (1 min) during the drain: ${loadMin.toFixed(1)}-${loadMax.toFixed(1)}`,
    ]
    return {
      row: { group: 'scale', name: o.name, bytes: 0, seconds, cpuSeconds: cpu.reduce((a, b) => a + b, 0), peakRssMiB: Math.max(...rss), extra },
      lines,
    }
  } finally {
    for (const p of proxies) p.child.kill('SIGTERM')
    await Promise.all(proxies.map((p) => p.exited))
    await client.close()
    await sim.close()
    await rm(remoteDir, { recursive: true, force: true })
    await rm(`${remoteDir}-warm`, { recursive: true, force: true })
  }
}

/**
 * Redis memory per queued job: the batch enqueued to a queue nobody serves; MEMORY USAGE of every key of
 * that queue (job hashes, wait list, events stream, dedup keys...) over the number of jobs, then removed.
 */
async function memoryPerJob(ctx: BenchContext, vms: number, redisUrl: string, sealKey: SealKey): Promise<number> {
  const sim = await startXapiSimulator({ vms, disksPerVm: 1, diskSizeBytes: DISK_BYTES, fillRatio: 0.5, seed: 300 })
  const client = new EnqueueClient({ redis: compileConfig({ redis: { url: redisUrl } }).redis, sealKey })
  const admin = new Redis(redisUrl)
  try {
    const pool = `idle-${randomBytes(3).toString('hex')}`
    await Promise.all(tasks(sim, `file://${ctx.tmpDir}/idle`, pool).map((t) => client.enqueue({ pool }, t)))
    let bytes = 0
    let cursor = '0'
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `bull:${poolQueue(pool)}:*`, 'COUNT', 1000)
      cursor = next
      for (const k of keys) bytes += (await admin.memory('USAGE', k, 'SAMPLES', '0')) ?? 0
    } while (cursor !== '0')
    await client.queue(poolQueue(pool)).obliterate({ force: true })
    return bytes / vms
  } finally {
    admin.disconnect()
    await client.close()
    await sim.close()
  }
}

export default async function scaleBench(ctx: BenchContext): Promise<BenchRow[]> {
  const vms = Math.max(3, Math.round(300 * ctx.scale))
  const server = await startRedis()
  const sealKey = SealKey.generate()
  try {
    const perJob = await memoryPerJob(ctx, vms, server.url, sealKey)
    ctx.log(`Redis memory per queued job: ${(perJob / 1024).toFixed(1)} KiB (${vms} jobs enqueued to a queue nobody serves)`)
    const three = await runBatch(ctx, { vms, proxies: 3, redisUrl: server.url, sealKey, name: `3 proxies, ${vms} VMs` })
    for (const l of three.lines) ctx.log(l)
    const one = await runBatch(ctx, { vms, proxies: 1, redisUrl: server.url, sealKey, name: `1 proxy, ${vms} VMs` })
    for (const l of one.lines) ctx.log(l)
    const mem = { redisKiBPerQueuedJob: perJob / 1024 }
    return [
      { ...one.row, extra: { ...one.row.extra, ...mem } },
      { ...three.row, baseline: one.row.name, extra: { ...three.row.extra, ...mem } },
    ]
  } finally {
    await server.destroy()
  }
}

/**
 * Chaos scenarios over real backup runs (no stand-ins: the XAPI simulator in this process, the real
 * engine and thread pool in `backup-proxy serve`, a local remote). Used by `npm run chaos`
 * (bench/chaos.ts) and, small, by test/workers/chaos-sigkill.test.ts and chaos-redis-restart.test.ts.
 *
 * - `sigkillReal`: serve SIGKILLed at random moments and restarted each time. Afterwards: every job
 *   ended (success, or E_STALLED when killed more than maxStalledCount times), `verify --full` finds no
 *   problem, no VM has two backups of one run (no duplicate), snapshots counted per VM by the job's
 *   outcome; then each job runs once more, unharmed (the job's next scheduled run), after which every VM
 *   keeps at most its delta-base snapshot. Also the time from a restart to a job running again.
 * - `redisRestartReal`: N jobs queued (one VM each), Redis (AOF) restarted while some run: none lost,
 *   none run twice to completion (one backup per job), `verify --full` clean.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Job, Queue } from 'bullmq'
import { verifyRemote } from '../src/backup/verify.js'
import { EnqueueClient, type JobHandle } from '../src/queue/client.js'
import { redisOptions } from '../src/queue/redis.js'
import { SealKey } from '../src/queue/seal.js'
import type { TaskInputOf } from '../src/queue/tasks.js'
import { createRemote } from '../src/remotes/index.js'
import { XapiClient } from '../src/xapi/client.js'
import { startXapiSimulator, type XapiSimulator } from '../src/xapi/sim/index.js'
import { countBy, outcomeKey, sleep, startServe, stopServe, waitUntil, type Serve } from './chaos-lib.js'

interface SigkillRealOptions {
  redisUrl: string
  /** scratch directory (the remote goes in it) */
  work: string
  kills: number
  vms: number
  diskBytes?: number
  maxStalledCount?: number
}

interface SigkillRealResult {
  outcomes: Record<string, number>
  kills: number
  verifyProblems: string[]
  backups: number
  duplicates: number
  /** VMs whose job ended E_STALLED but which hold a backup (published by an attempt killed after that) */
  backupsOfStalledJobs: number
  /** before the next run: over the VMs whose job succeeded, and over those whose job ended E_STALLED */
  maxSnapshotsSucceeded: number
  maxSnapshotsStalled: number
  /** after each job ran once more */
  nextRun: { outcomes: Record<string, number>; maxSnapshotsPerVm: number; verifyProblems: string[]; untaggedSnapshots: number }
  temporariesLeft: number
  resumeMedianS: number
  ok: boolean
}

const redisConfig = (url: string) => ({ mode: 'single' as const, url, nodes: [], sentinels: [], prefix: 'bull', tlsRejectUnauthorized: true })

/** `lockMs`: 3 s (a killed serve's jobs come back fast) unless given */
function serveReal(redisUrl: string, proxyId: string, seal: string, maxStalledCount: number, concurrency = 2, lockMs?: number): Serve {
  const locks = lockMs === undefined ? {} : { BACKUP_PROXY_WORKERS_LOCK_DURATION_MS: String(lockMs), BACKUP_PROXY_WORKERS_STALLED_INTERVAL_MS: String(lockMs / 2) }
  return startServe({ redisUrl, proxyId, seal, concurrency, env: { BACKUP_PROXY_WORKERS_MAX_STALLED_COUNT: String(maxStalledCount), BACKUP_PROXY_LOG_LEVEL: 'info', ...locks } })
}

function backupTask(sim: XapiSimulator, jobId: string, vmUuid: string, remoteDir: string): TaskInputOf<'backup.run'> {
  return {
    kind: 'backup.run',
    job: { id: jobId, name: `chaos ${jobId}`, mode: 'delta', vms: { uuid: [vmUuid] }, settings: { '': { exportRetention: 3 } } },
    schedule: { id: 'chaos' },
    remotes: { local: { url: `file://${remoteDir}` } },
    xapis: { sim: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
  }
}

/** Kills serve at random moments (a job running, then 0.2–3 s) until every job ended or `kills` are done. */
async function killLoop(o: SigkillRealOptions, proxy: string, seal: string, handles: JobHandle[]): Promise<{ kills: number; resumeMs: number[] }> {
  const resumeMs: number[] = []
  let kills = 0
  const ended = async () => (await Promise.all(handles.map((h) => h.state()))).every((s) => s === 'completed' || s === 'failed')
  while (kills < o.kills && !(await ended())) {
    const serve = serveReal(o.redisUrl, proxy, seal, o.maxStalledCount ?? 3)
    const t0 = performance.now()
    if (await waitUntil(() => serve.out.some((l) => l.includes('"job started"')), 120_000)) resumeMs.push(performance.now() - t0)
    await sleep(200 + Math.random() * 2800)
    await stopServe(serve, 'SIGKILL')
    kills++
  }
  return { kills, resumeMs }
}

/** Backup metadata files per VM uuid on a local remote. */
async function backupsPerVm(remoteDir: string): Promise<Map<string, number>> {
  const metadata = (await readdir(join(remoteDir, 'xo-vm-backups'), { recursive: true }).catch(() => [] as string[])).filter((p) => /\/\d{8}T\d{6}Z\.json$/.test(p))
  const perVm = new Map<string, number>()
  for (const p of metadata) perVm.set(p.split('/')[0]!, (perVm.get(p.split('/')[0]!) ?? 0) + 1)
  return perVm
}

/** Snapshots per VM uuid; `untagged` counts those without XO's `xo:backup:job` tag (all VMs together). */
async function snapshotsPerVm(sim: XapiSimulator): Promise<Map<string, number> & { untagged?: number }> {
  const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  try {
    const byRef = new Map<string, number>()
    let untagged = 0
    for (const vm of xapi.listVms({ includeSnapshots: true })) {
      if (!vm.is_a_snapshot) continue
      byRef.set(vm.snapshot_of, (byRef.get(vm.snapshot_of) ?? 0) + 1)
      if ((vm.other_config as Record<string, string> | undefined)?.['xo:backup:job'] === undefined) untagged++
    }
    return Object.assign(new Map(sim.listVms().map((vm) => [vm.uuid, byRef.get(vm.ref) ?? 0])), { untagged })
  } finally {
    await xapi.close()
  }
}

async function verifyLocal(remoteDir: string): Promise<string[]> {
  const remote = createRemote(`file://${remoteDir}`)
  await remote.open()
  const report = await verifyRemote(remote, { full: true }).finally(() => remote.close())
  return report.problems.map((p) => `${p.kind} ${p.path}: ${p.message}`)
}

const maxOf = (values: Iterable<number>) => Math.max(0, ...values)

export async function sigkillReal(o: SigkillRealOptions): Promise<SigkillRealResult> {
  const seal = SealKey.generate()
  const sim = await startXapiSimulator({ vms: o.vms, disksPerVm: 1, diskSizeBytes: o.diskBytes ?? 16 << 20, fillRatio: 0.5, seed: 18 })
  const remoteDir = join(o.work, 'remote')
  await mkdir(remoteDir, { recursive: true })
  const proxy = `chaos-real-${randomBytes(3).toString('hex')}`
  const client = new EnqueueClient({ redis: redisConfig(o.redisUrl), sealKey: seal, attempts: 3, backoffMs: 200 })
  try {
    const vms = sim.listVms()
    const tasks = vms.map((vm, i) => backupTask(sim, `${proxy}-vm${i}`, vm.uuid, remoteDir))
    const handles = await Promise.all(tasks.map((t) => client.enqueue({ proxy }, t)))
    const { kills, resumeMs } = await killLoop(o, proxy, seal.export(), handles)
    // a last serve, left alone, ends every job; it then runs each job once more (its next scheduled run)
    const last = serveReal(o.redisUrl, proxy, seal.export(), o.maxStalledCount ?? 3)
    const summaries = await Promise.all(handles.map((h) => h.result()))
    const outcomes = countBy(summaries, outcomeKey)
    const verifyProblems = await verifyLocal(remoteDir)
    const perVm = await backupsPerVm(remoteDir)
    const temporariesLeft = (await readdir(remoteDir, { recursive: true })).filter((p) => p.split('/').pop()!.startsWith('.') && p.endsWith('.tmp')).length
    const snaps = await snapshotsPerVm(sim)
    const stalled = vms.filter((_, i) => summaries[i]!.error?.code === 'E_STALLED').map((vm) => vm.uuid)
    const succeeded = vms.filter((_, i) => summaries[i]!.status === 'success').map((vm) => vm.uuid)
    // one backup per VM per successful job (a job ending E_STALLED may have published before its last kill)
    const duplicates = [...perVm.values()].reduce((a, n) => a + Math.max(0, n - 1), 0)
    const backupsOfStalledJobs = stalled.filter((uuid) => (perVm.get(uuid) ?? 0) > 0).length
    const next = await Promise.all(tasks.map(async (t) => (await client.enqueue({ proxy }, t)).result()))
    await stopServe(last, 'SIGTERM')
    const after = await snapshotsPerVm(sim)
    const nextRun = { outcomes: countBy(next, outcomeKey), maxSnapshotsPerVm: maxOf(after.values()), untaggedSnapshots: after.untagged ?? 0, verifyProblems: await verifyLocal(remoteDir) }
    const sorted = resumeMs.sort((a, b) => a - b)
    const allowed = Object.keys(outcomes).every((k) => k === 'success' || k === 'failure:E_STALLED')
    const maxSnapshotsSucceeded = maxOf(succeeded.map((u) => snaps.get(u) ?? 0))
    const backups = [...perVm.values()].reduce((a, n) => a + n, 0)
    return {
      outcomes,
      kills,
      verifyProblems,
      backups,
      duplicates,
      backupsOfStalledJobs,
      maxSnapshotsSucceeded,
      maxSnapshotsStalled: maxOf(stalled.map((u) => snaps.get(u) ?? 0)),
      nextRun,
      temporariesLeft,
      resumeMedianS: (sorted[Math.floor(sorted.length / 2)] ?? 0) / 1000,
      ok: allowed && verifyProblems.length === 0 && duplicates === 0 && temporariesLeft === 0 && maxSnapshotsSucceeded <= 1 && succeeded.every((u) => perVm.get(u) === 1) &&
        nextRun.outcomes.success === vms.length && nextRun.maxSnapshotsPerVm <= 1 && nextRun.verifyProblems.length === 0,
    }
  } finally {
    await client.close().catch(() => undefined)
    await sim.close()
  }
}

interface RedisRestartRealOptions {
  /** a private redis-server the scenario may stop and start (AOF on) */
  redis: { url: string; stop: () => Promise<void>; start: () => Promise<void> }
  work: string
  jobs: number
  /** each VM's one disk (default 4 MiB, half allocated; 2 MiB is the smallest) */
  diskBytes?: number
  /**
   * VMs per simulated pool (default 25): every job reads its whole pool when it connects, so one pool of
   * 1,000 VMs (and their snapshots) made each job's cost grow with the jobs done
   */
  vmsPerPool?: number
  /** called with the queue's counts every minute until every job ended */
  progress?: (line: string) => void
}

interface RedisRestartRealResult {
  outcomes: Record<string, number>
  /** when Redis was stopped */
  completedBefore: number
  activeBefore: number
  lost: number
  completedTwice: number
  /** jobs an attempt of which started again after the restart */
  restarted: number
  verifyProblems: string[]
  pools: number
  ok: boolean
}

async function reportCounts(queue: Queue, progress: ((line: string) => void) | undefined): Promise<void> {
  if (progress === undefined) return
  const c = await queue.getJobCounts('completed', 'failed', 'active', 'waiting', 'delayed', 'prioritized').catch((e: unknown) => ({ error: String(e) }))
  progress(JSON.stringify(c))
}

/** `jobs` VMs spread over pools of `perPool` (the last may hold fewer), one simulator each. */
async function startPools(jobs: number, perPool: number, diskBytes: number): Promise<XapiSimulator[]> {
  const sims: XapiSimulator[] = []
  try {
    for (let done = 0, p = 0; done < jobs; done += perPool, p++) {
      sims.push(await startXapiSimulator({ vms: Math.min(perPool, jobs - done), disksPerVm: 1, diskSizeBytes: diskBytes, fillRatio: 0.5, seed: 1000 + p }))
    }
    return sims
  } catch (error) {
    await Promise.all(sims.map((s) => s.close()))
    throw error
  }
}

export async function redisRestartReal(o: RedisRestartRealOptions): Promise<RedisRestartRealResult> {
  const seal = SealKey.generate()
  const sims = await startPools(o.jobs, o.vmsPerPool ?? 25, o.diskBytes ?? 4 << 20)
  const remoteDir = join(o.work, 'remote')
  await mkdir(remoteDir, { recursive: true })
  const proxy = `chaos-rr-${randomBytes(3).toString('hex')}`
  const client = new EnqueueClient({ redis: redisConfig(o.redis.url), sealKey: seal, attempts: 3, backoffMs: 200 })
  // lock 30 s: nothing is killed here, and a 3 s lock is lost on a loaded machine (a 1,000-job run at load
  // ≈ 25 had 46 jobs end E_STALLED and 6 backed up twice by two attempts at once)
  const serve = serveReal(o.redis.url, proxy, seal.export(), 3, 4, 30_000)
  try {
    const vms = sims.flatMap((sim) => sim.listVms().map((vm) => ({ sim, uuid: vm.uuid })))
    const handles: JobHandle[] = []
    for (let i = 0; i < vms.length; i += 50) handles.push(...(await Promise.all(vms.slice(i, i + 50).map((vm, j) => client.enqueue({ proxy }, backupTask(vm.sim, `${proxy}-${i + j}`, vm.uuid, remoteDir))))))
    const queue = client.queue(handles[0]!.queue)
    const target = Math.min(20, Math.ceil(o.jobs / 10))
    // some done, some running (or, should every job end first, all done: the row then shows 0 running)
    await waitUntil(async () => {
      const [completed, active, failed] = [await queue.getCompletedCount(), await queue.getActiveCount(), await queue.getFailedCount()]
      return (completed >= target && active > 0) || completed + failed === o.jobs
    }, 30 * 60_000)
    const completedBefore = await queue.getCompletedCount()
    const activeBefore = await queue.getActiveCount()
    await o.redis.stop()
    await o.redis.start()
    o.progress?.(`Redis restarted with ${completedBefore} completed, ${activeBefore} running`)
    const ticker = setInterval(() => void reportCounts(queue, o.progress), 60_000)
    const summaries = await Promise.all(handles.map((h) => h.result())).finally(() => clearInterval(ticker))
    const q = new Queue(handles[0]!.queue, { connection: redisOptions(redisConfig(o.redis.url)), prefix: 'bull' })
    let lost = 0
    let restarted = 0
    for (const h of handles) {
      const job = await Job.fromId(q, h.id)
      if (job === undefined) lost++
      else if (job.attemptsStarted > 1 || job.stalledCounter > 0) restarted++
    }
    await q.close()
    await stopServe(serve, 'SIGTERM')
    const perVm = await backupsPerVm(remoteDir)
    const completedTwice = [...perVm.values()].filter((n) => n > 1).length
    const verifyProblems = await verifyLocal(remoteDir)
    const outcomes = countBy(summaries, outcomeKey)
    return {
      outcomes, completedBefore, activeBefore, lost, completedTwice, restarted, verifyProblems, pools: sims.length,
      ok: lost === 0 && completedTwice === 0 && outcomes.success === o.jobs && perVm.size === o.jobs && verifyProblems.length === 0,
    }
  } finally {
    await stopServe(serve, 'SIGKILL')
    await client.close().catch(() => undefined)
    await Promise.all(sims.map((s) => s.close()))
  }
}

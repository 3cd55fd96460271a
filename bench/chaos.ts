/**
 * `npm run chaos`: a hostile operator's scenarios against real processes, printed as a table and written
 * to RELIABILITY.md. Not part of `npm test` (the suite runs a short variant of each: serve-process,
 * serve-outage, stalled, queue tests). Each scenario runs its own redis-server (AOF on) on a free port
 * and `backup-proxy serve` processes from the sources, timings shortened by config; the first three use
 * the stand-in processors (disk streams written by the thread pool to a local directory, through
 * temporaries; no XAPI), the others real backup runs (XAPI simulator, real engine).
 * Prints a markdown table (RELIABILITY.md records the figures of a run) and exits 1 when a scenario did not hold.
 *
 *   npm run chaos                      # every scenario, default sizes
 *   CHAOS_KILLS=50 CHAOS_JOBS=1000 npm run chaos
 *   npm run chaos -- redis-restart     # scenarios whose name contains one of the words
 *   npm run chaos -- =redis-restart    # only the scenario of that exact name
 *   (shared helpers: bench/chaos-lib.ts)
 *
 * Scenarios (smallest first):
 *   redis-outage   Redis stopped CHAOS_OUTAGE_S seconds while jobs run, then started again: every job ends
 *                  (success, or a coded error), the proxy recovers without a restart, every serve output
 *                  line is a JSON log record.
 *   redis-restart  CHAOS_JOBS jobs queued and some running, Redis restarted (AOF): 0 lost, 0 completed twice.
 *   stuck-stop     Redis killed or paused while jobs run, then two SIGTERMs: serve ends (E_SHUTDOWN_STUCK).
 *   sigkill        serve SIGKILLed at random moments CHAOS_KILLS times over streaming jobs and restarted:
 *                  every job ends (success, or E_STALLED past maxStalledCount), no temporary left, no
 *                  job completed twice; the time a killed job takes to resume is measured.
 *   sigkill-real   the same over real backup runs (XAPI simulator, real engine, local remote):
 *                  bench/chaos-real.ts; also `verify --full` clean, no duplicate backup, snapshots kept
 *                  within the delta base; then each job runs once more: snapshots back to the delta base.
 *   redis-restart-real  CHAOS_JOBS real backup runs queued (one VM each, a CHAOS_DISK_MIB disk, default 4;
 *                  CHAOS_VMS_PER_POOL VMs per simulated pool, default 25), Redis restarted (AOF) while some
 *                  run: 0 lost, 0 run twice to completion (one backup per VM), `verify --full` clean.
 *   remote-full, remote-smb, remote-nfs, remote-s3  a target filling up, or its server SIGKILLed
 *                  mid-write, beside two local targets: bench/chaos-remotes.ts.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Job, Queue } from 'bullmq'
import { EnqueueClient, type JobHandle } from '../src/queue/client.js'
import { redisOptions } from '../src/queue/redis.js'
import { SealKey } from '../src/queue/seal.js'
import type { TaskInputOf } from '../src/queue/tasks.js'
import { countBy, exitOf, fmtCounts, freePort, outcomeKey, rawLines, RedisServer, sleep, startServe as startServeWith, until, type Serve } from './chaos-lib.js'
import { redisRestartReal, sigkillReal } from './chaos-real.js'
import { remoteFault, REMOTE_FAULT_KINDS, type RemoteFaultKind } from './chaos-remotes.js'

const filters = process.argv.slice(2)
const KILLS = Number(process.env.CHAOS_KILLS ?? '10')
const JOBS = Number(process.env.CHAOS_JOBS ?? '200')
const OUTAGE_S = Number(process.env.CHAOS_OUTAGE_S ?? '10')
/** redis-restart-real: each VM's disk (MiB, a multiple of 2) and VMs per simulated pool */
const DISK_MIB = Number(process.env.CHAOS_DISK_MIB ?? '4')
const VMS_PER_POOL = Number(process.env.CHAOS_VMS_PER_POOL ?? '25')
const sealText = SealKey.generate().export()
const sealKey = SealKey.fromString(sealText)
const VM = '11111111-1111-4111-8111-111111111111'

interface Row {
  scenario: string
  figures: Record<string, string | number>
  ok: boolean
}

/** serve with the stand-in processors (concurrency 4) */
function startServe(redisUrl: string, proxyId: string, env: Record<string, string> = {}): Serve {
  return startServeWith({ redisUrl, proxyId, seal: sealText, concurrency: 4, env: { BACKUP_PROXY_STAND_INS: '1', ...env } })
}

function task(dir: string, bytes: number, chunkDelayMs: number): TaskInputOf<'backup.run'> {
  return {
    kind: 'backup.run',
    job: { id: `c-${randomBytes(5).toString('hex')}`, name: 'chaos', mode: 'delta', vms: { uuid: [VM] }, settings: { '': { standInDir: dir, standInDiskBytes: bytes, standInChunkDelayMs: chunkDelayMs } } },
    schedule: { id: 's' },
    remotes: { r: { url: 'file:///tmp' } },
    xapis: { x: { url: 'https://xapi.invalid', credentials: { username: 'root', password: 'chaos-secret' } } },
  }
}

async function withEnv<T>(fn: (redis: RedisServer, work: string, client: EnqueueClient) => Promise<T>): Promise<T> {
  const work = await mkdtemp(join(tmpdir(), 'bp-chaos-'))
  const redis = new RedisServer(await freePort(), work)
  await redis.start()
  const client = new EnqueueClient({ redis: { mode: 'single', url: redis.url, nodes: [], sentinels: [], prefix: 'bull', tlsRejectUnauthorized: true }, sealKey, attempts: 3, backoffMs: 200 })
  try {
    return await fn(redis, work, client)
  } finally {
    await client.close().catch(() => undefined)
    await redis.stop()
    await rm(work, { recursive: true, force: true })
  }
}

async function outcomes(handles: JobHandle[]): Promise<Record<string, number>> {
  return countBy(await Promise.all(handles.map((h) => h.result())), outcomeKey)
}

async function redisOutage(): Promise<Row> {
  return withEnv(async (redis, work, client) => {
    const serve = startServe(redis.url, 'chaos-outage')
    await until('serving', () => serve.out.some((l) => l.includes('proxy serving')))
    const handles = await Promise.all(Array.from({ length: 8 }, () => client.enqueue({ proxy: 'chaos-outage' }, task(work, 16 << 20, 20))))
    await until('jobs running', async () => (await readdir(work)).length > 0)
    const t0 = performance.now()
    await redis.stop()
    await sleep(OUTAGE_S * 1000)
    await redis.start()
    const ends = await outcomes(handles)
    const recoveredS = (performance.now() - t0) / 1000
    const after = await (await client.enqueue({ proxy: 'chaos-outage' }, task(work, 1 << 20, 0))).result()
    serve.child.kill('SIGTERM')
    const code = await exitOf(serve)
    const raw = rawLines(serve)
    const uncoded = Object.keys(ends).filter((k) => k.endsWith('uncoded')).length
    return {
      scenario: `redis-outage (${OUTAGE_S} s, 8 jobs)`,
      figures: { outcomes: fmtCounts(ends), 'job after outage': after.status, 'all ended after (s)': recoveredS.toFixed(1), 'serve exit': String(code), 'raw (non-JSON) lines': raw.length },
      ok: uncoded === 0 && after.status === 'success' && code === 0 && raw.length === 0,
    }
  })
}

/**
 * Defect 7 of the chaos issue, as reported: Redis goes away (SIGKILL, or SIGSTOP: connections hang) while
 * jobs run, then SIGTERM with a short grace and SIGTERM again: serve must end (E_SHUTDOWN_STUCK, exit 1)
 * instead of staying alive. Each Redis failure mode CHAOS_STOP_TRIES times.
 */
async function stuckStop(): Promise<Row> {
  const tries = Number(process.env.CHAOS_STOP_TRIES ?? '2')
  const ends: string[] = []
  for (const redisSignal of ['SIGKILL', 'SIGSTOP'] as const) {
    for (let i = 0; i < tries; i++) {
      ends.push(await withEnv(async (redis, work, client) => {
        const serve = startServe(redis.url, 'chaos-stop', { BACKUP_PROXY_WORKERS_SHUTDOWN_GRACE_MS: '1000' })
        await until('serving', () => serve.out.some((l) => l.includes('proxy serving')))
        for (let j = 0; j < 6; j++) await client.enqueue({ proxy: 'chaos-stop' }, task(work, 64 << 20, 20))
        await until('jobs running', () => serve.out.filter((l) => l.includes('job started')).length >= 2)
        await client.close()
        redis.child?.kill(redisSignal)
        await sleep(3000)
        const t0 = performance.now()
        serve.child.kill('SIGTERM')
        await sleep(2000)
        serve.child.kill('SIGTERM')
        const code = await Promise.race([exitOf(serve), sleep(60_000).then(() => 'alive')])
        serve.child.kill('SIGKILL')
        redis.child?.kill('SIGKILL')
        return `Redis ${redisSignal}: ${code === 'alive' ? 'alive after 60 s' : `exit ${code} after ${((performance.now() - t0) / 1000).toFixed(1)} s`}${serve.out.some((l) => l.includes('E_SHUTDOWN_STUCK')) ? ' (E_SHUTDOWN_STUCK)' : ''}`
      }))
    }
  }
  return { scenario: `stuck-stop (Redis killed or paused while jobs run; SIGTERM with a 1 s grace, SIGTERM again 2 s later; ${tries} tries each)`, figures: { ends: ends.join('; ') }, ok: ends.every((e) => !e.includes('alive')) }
}

async function redisRestart(): Promise<Row> {
  return withEnv(async (redis, work, client) => {
    const serve = startServe(redis.url, 'chaos-restart')
    await until('serving', () => serve.out.some((l) => l.includes('proxy serving')))
    const handles: JobHandle[] = []
    for (let i = 0; i < JOBS; i++) handles.push(await client.enqueue({ proxy: 'chaos-restart' }, task(work, 256 << 10, 2)))
    await until('some jobs done', async () => (await readdir(work)).length >= 4)
    const t0 = performance.now()
    await redis.stop()
    await redis.start()
    const restartS = (performance.now() - t0) / 1000
    const ends = await outcomes(handles)
    const q = new Queue(handles[0]!.queue, { connection: redisOptions({ mode: 'single', url: redis.url, nodes: [], sentinels: [], prefix: 'bull', tlsRejectUnauthorized: true }), prefix: 'bull' })
    // run twice = two attempts that each ended in success, as serve logged them; not the job log's
    // "status":"success" lines, which one attempt writes twice (the VM task's end and the run's end)
    const finished = (id: string) => serve.out.filter((l) => l.includes(`"jobId":"${id}"`) && l.includes('"job finished"') && l.includes('"status":"success"')).length
    let twice = 0
    let missing = 0
    let again = 0
    for (const h of handles) {
      const job = await Job.fromId(q, h.id)
      if (job === undefined) missing++
      else if (job.attemptsStarted > 1 || job.stalledCounter > 0) {
        again++
        if (finished(h.id) > 1) twice++
      }
    }
    await q.close()
    serve.child.kill('SIGTERM')
    await exitOf(serve)
    return {
      scenario: `redis-restart (AOF, ${JOBS} jobs queued, some running)`,
      figures: { outcomes: fmtCounts(ends), 'Redis stop + start (s)': restartS.toFixed(1), lost: missing, 'run twice to completion': twice, 'jobs started again': again, 'raw lines': rawLines(serve).length },
      ok: missing === 0 && twice === 0 && (ends.success ?? 0) === JOBS,
    }
  })
}

async function sigkill(): Promise<Row> {
  return withEnv(async (redis, work, client) => {
    const jobs = Math.max(4, Math.ceil(KILLS / 2))
    const handles = await Promise.all(Array.from({ length: jobs }, () => client.enqueue({ proxy: 'chaos-kill' }, task(work, 24 << 20, 8))))
    const resumeMs: number[] = []
    for (let k = 0; k < KILLS; k++) {
      const serve = startServe(redis.url, 'chaos-kill', { BACKUP_PROXY_WORKERS_MAX_STALLED_COUNT: '3' })
      const t0 = performance.now()
      await until('serving', () => serve.out.some((l) => l.includes('proxy serving')))
      const started = serve.out.filter((l) => l.includes('job started')).length
      await until('a job running', () => serve.out.filter((l) => l.includes('job started')).length > started || serve.out.some((l) => l.includes('job finished')), 60_000).catch(() => undefined)
      resumeMs.push(performance.now() - t0)
      await sleep(200 + Math.random() * 2500)
      serve.child.kill('SIGKILL')
      await exitOf(serve)
      if ((await Promise.all(handles.map((h) => h.state()))).every((s) => s === 'completed' || s === 'failed')) break
    }
    const last = startServe(redis.url, 'chaos-kill', { BACKUP_PROXY_WORKERS_MAX_STALLED_COUNT: '3' })
    const ends = await outcomes(handles)
    last.child.kill('SIGTERM')
    await exitOf(last)
    const left = (await readdir(work, { recursive: true })).filter((n) => n.split('/').pop()!.startsWith('.'))
    const allowed = Object.keys(ends).every((k) => k === 'success' || k === 'failure:E_STALLED')
    const sorted = resumeMs.sort((a, b) => a - b)
    return {
      scenario: `sigkill (${KILLS} kills, ${jobs} streaming jobs, maxStalledCount 3)`,
      figures: { outcomes: fmtCounts(ends), 'temporaries left': left.length, 'restart to a job running, median (s)': ((sorted[Math.floor(sorted.length / 2)] ?? 0) / 1000).toFixed(1) },
      ok: allowed && left.length === 0,
    }
  })
}

async function sigkillRealRow(): Promise<Row> {
  return withEnv(async (redis, work) => {
    // each kill stalls the (up to 2) jobs running: enough jobs that most end in success, not E_STALLED
    const vms = Math.max(3, Math.ceil(KILLS * 0.75))
    const r = await sigkillReal({ redisUrl: redis.url, work, kills: KILLS, vms })
    return {
      scenario: `sigkill-real (up to ${KILLS} kills over ${vms} real backup runs, simulator + local remote, maxStalledCount 3)`,
      figures: {
        kills: r.kills, outcomes: fmtCounts(r.outcomes), 'verify --full problems': r.verifyProblems.length,
        backups: r.backups, duplicates: r.duplicates, 'VMs of E_STALLED jobs with a backup': r.backupsOfStalledJobs,
        'max snapshots per VM (job succeeded / E_STALLED)': `${r.maxSnapshotsSucceeded} / ${r.maxSnapshotsStalled}`, 'temporaries left': r.temporariesLeft,
        'restart to a job running, median (s)': r.resumeMedianS.toFixed(1),
        'next run: outcomes': fmtCounts(r.nextRun.outcomes), 'next run: max snapshots per VM': r.nextRun.maxSnapshotsPerVm, 'next run: snapshots without the job tag': r.nextRun.untaggedSnapshots, 'next run: verify problems': r.nextRun.verifyProblems.length,
        ...(r.verifyProblems.length > 0 ? { 'first problem': r.verifyProblems[0]! } : {}),
      },
      ok: r.ok,
    }
  })
}

async function redisRestartRealRow(): Promise<Row> {
  return withEnv(async (redis, work) => {
    const progress = (line: string) => process.stderr.write(`chaos: redis-restart-real: ${line}\n`)
    const r = await redisRestartReal({ redis, work, jobs: JOBS, diskBytes: DISK_MIB * 2 ** 20, vmsPerPool: VMS_PER_POOL, progress })
    return {
      scenario: `redis-restart-real (AOF, ${JOBS} real backup runs queued, one VM each with a ${DISK_MIB} MiB disk, ${r.pools} simulated pools, serve --concurrency 4)`,
      figures: {
        outcomes: fmtCounts(r.outcomes), 'completed / running at the restart': `${r.completedBefore} / ${r.activeBefore}`, lost: r.lost, 'completed twice (VMs with 2 backups)': r.completedTwice,
        'jobs started again': r.restarted, 'verify --full problems': r.verifyProblems.length, ...(r.verifyProblems.length > 0 ? { 'first problem': r.verifyProblems[0]! } : {}),
      },
      ok: r.ok,
    }
  })
}

function remoteFaultRow(kind: RemoteFaultKind): () => Promise<Row> {
  return () => withEnv(async (redis, work) => {
    const r = await remoteFault(kind, { redisUrl: redis.url, work })
    const problems = Object.entries(r.verifyProblems).filter(([, p]) => p.length > 0)
    return {
      scenario: `remote-${kind} (${kind === 'full' ? 'a target on an 8 MiB tmpfs, grown afterwards' : `the ${kind} server SIGKILLed mid-write, restarted`}; 2 local targets beside it)`,
      figures: {
        'killed mid-write': r.killedMidWrite ? 'yes' : 'no',
        run: `${r.first.status}${r.first.code === undefined ? '' : ` ${r.first.code}`}${r.first.namesTarget ? ` naming ${kind}` : ''}; succeeded ${r.first.succeeded.join(',')}; failed ${r.first.failed.join(',')}`,
        'temporaries before the next run': r.leftoversBeforeNextRun, 'next run': `${r.next.status}; succeeded ${r.next.succeeded.join(',')}`,
        'verify --full problems': problems.length === 0 ? 0 : problems.map(([id, p]) => `${id}: ${p[0]}`).join('; '), 'temporaries after the next run': r.leftoversAfterNextRun.length,
      },
      ok: r.ok,
    }
  })
}

const scenarios: [string, () => Promise<Row>][] = [
  ['redis-outage', redisOutage],
  ['redis-restart', redisRestart],
  ['stuck-stop', stuckStop],
  ['sigkill', sigkill],
  ['sigkill-real', sigkillRealRow],
  ['redis-restart-real', redisRestartRealRow],
  ...REMOTE_FAULT_KINDS.map((k): [string, () => Promise<Row>] => [`remote-${k}`, remoteFaultRow(k)]),
]
const rows: Row[] = []
for (const [name, run] of scenarios) {
  if (filters.length > 0 && !filters.some((f) => (f.startsWith('=') ? name === f.slice(1) : name.includes(f)))) continue
  const t0 = performance.now()
  process.stderr.write(`chaos: ${name}...\n`)
  try {
    const row = await run()
    row.figures['duration (s)'] = ((performance.now() - t0) / 1000).toFixed(0)
    rows.push(row)
  } catch (error) {
    rows.push({ scenario: name, figures: { error: (error as Error).message }, ok: false })
  }
  process.stderr.write(`chaos: ${name}: ${JSON.stringify(rows[rows.length - 1])}\n`)
}
const table = ['| scenario | held | figures |', '|---|---|---|', ...rows.map((r) => `| ${r.scenario} | ${r.ok ? 'yes' : '**no**'} | ${Object.entries(r.figures).map(([k, v]) => `${k}: ${v}`).join('; ')} |`)].join('\n')
process.stdout.write(`${table}\n`)
process.exit(rows.every((r) => r.ok) ? 0 : 1)

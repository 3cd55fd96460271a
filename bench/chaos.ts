/**
 * `npm run chaos`: a hostile operator's scenarios against real processes, printed as a table and written
 * to RELIABILITY.md. Not part of `npm test` (the suite runs a short variant of each: serve-process,
 * serve-outage, stalled, queue tests). Each scenario runs its own redis-server (AOF on) on a free port
 * and `backup-proxy serve` processes from the sources, with the stand-in processors (disk streams written
 * by the thread pool to a local directory, through temporaries; no XAPI), timings shortened by config.
 * Prints a markdown table (RELIABILITY.md records the figures of a run) and exits 1 when a scenario did not hold.
 *
 *   npm run chaos                      # every scenario, default sizes
 *   CHAOS_KILLS=50 CHAOS_JOBS=1000 npm run chaos
 *   npm run chaos -- redis-restart     # scenarios whose name contains one of the words
 *
 * Scenarios (smallest first):
 *   redis-outage   Redis stopped CHAOS_OUTAGE_S seconds while jobs run, then started again: every job ends
 *                  (success, or a coded error), the proxy recovers without a restart, every serve output
 *                  line is a JSON log record.
 *   redis-restart  CHAOS_JOBS jobs queued and some running, Redis restarted (AOF): 0 lost, 0 completed twice.
 *   sigkill        serve SIGKILLed at random moments CHAOS_KILLS times over streaming jobs and restarted:
 *                  every job ends (success, or E_STALLED past maxStalledCount), no temporary left, no
 *                  job completed twice; the time a killed job takes to resume is measured.
 *   sigkill-real   the same over real backup runs (XAPI simulator, real engine, local remote):
 *                  bench/chaos-real.ts; also `verify --full` clean, no duplicate backup, snapshots kept
 *                  within the delta base.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Job, Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { EnqueueClient, type JobHandle } from '../src/queue/client.js'
import { redisOptions } from '../src/queue/redis.js'
import { SealKey } from '../src/queue/seal.js'
import type { TaskInputOf } from '../src/queue/tasks.js'
import { sigkillReal } from './chaos-real.js'

const root = new URL('../', import.meta.url).pathname
const filters = process.argv.slice(2)
const KILLS = Number(process.env.CHAOS_KILLS ?? '10')
const JOBS = Number(process.env.CHAOS_JOBS ?? '200')
const OUTAGE_S = Number(process.env.CHAOS_OUTAGE_S ?? '10')
const sealText = SealKey.generate().export()
const sealKey = SealKey.fromString(sealText)
const VM = '11111111-1111-4111-8111-111111111111'

interface Row {
  scenario: string
  figures: Record<string, string | number>
  ok: boolean
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as { port: number }).port
  await new Promise((resolve) => s.close(resolve))
  return port
}

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await Promise.resolve().then(check).catch(() => false)) return
    await sleep(100)
  }
  throw new Error(`timed out waiting for ${what}`)
}

class RedisServer {
  child: ChildProcess | undefined
  constructor(
    readonly port: number,
    readonly dir: string,
  ) {}
  get url(): string {
    return `redis://127.0.0.1:${this.port}`
  }
  async start(): Promise<void> {
    this.child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--maxmemory-policy', 'noeviction'], { stdio: 'ignore' })
    await until('redis up', async () => {
      const r = new Redis(this.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
      r.on('error', () => undefined)
      try {
        await r.connect()
        return (await r.ping()) === 'PONG'
      } finally {
        r.disconnect()
      }
    })
  }
  async stop(): Promise<void> {
    const c = this.child
    if (c === undefined || c.exitCode !== null) return
    const exited = new Promise((resolve) => c.once('exit', resolve))
    c.kill('SIGTERM')
    await exited
  }
}

interface Serve {
  child: ChildProcess
  out: string[]
}

function startServe(redisUrl: string, proxyId: string, env: Record<string, string> = {}): Serve {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--proxy', proxyId, '--redis-url', redisUrl, '--listen', '127.0.0.1:0', '--threads', '2', '--concurrency', '4'], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      BACKUP_PROXY_STAND_INS: '1',
      BACKUP_PROXY_SECURITY_SEAL_KEY: sealText,
      BACKUP_PROXY_WORKERS_LOCK_DURATION_MS: '3000',
      BACKUP_PROXY_WORKERS_STALLED_INTERVAL_MS: '1500',
      BACKUP_PROXY_LOG_PRETTY: 'false',
      ...env,
    },
  })
  const s: Serve = { child, out: [] }
  let partial = ''
  const keep = (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split('\n')
    partial = lines.pop() ?? ''
    s.out.push(...lines)
  }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  return s
}

async function exitOf(s: Serve): Promise<number | null> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return s.child.exitCode
  return new Promise((resolve) => s.child.once('exit', (code) => resolve(code)))
}

function rawLines(s: Serve): string[] {
  return s.out.filter((l) => {
    if (l.trim() === '') return false
    try {
      return typeof JSON.parse(l) !== 'object'
    } catch {
      return true
    }
  })
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

async function outcomes(handles: JobHandle[]): Promise<Map<string, number>> {
  const summaries = await Promise.all(handles.map((h) => h.result()))
  const counts = new Map<string, number>()
  for (const s of summaries as (typeof summaries[number] | null)[]) {
    if (s === null) {
      counts.set('no summary', (counts.get('no summary') ?? 0) + 1)
      continue
    }
    const key = s.status === 'success' ? 'success' : `${s.status}:${s.error?.code ?? 'uncoded'}`
    counts.set(key, (counts.get(key) ?? 0) + 1)
  }
  return counts
}

const fmt = (m: Map<string, number>) => [...m].map(([k, v]) => `${k}=${v}`).join(' ')

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
    const uncoded = [...ends.keys()].filter((k) => k.endsWith('uncoded')).length
    return {
      scenario: `redis-outage (${OUTAGE_S} s, 8 jobs)`,
      figures: { outcomes: fmt(ends), 'job after outage': after.status, 'all ended after (s)': recoveredS.toFixed(1), 'serve exit': String(code), 'raw (non-JSON) lines': raw.length },
      ok: uncoded === 0 && after.status === 'success' && code === 0 && raw.length === 0,
    }
  })
}

async function redisRestart(): Promise<Row> {
  return withEnv(async (redis, work, client) => {
    const serve = startServe(redis.url, 'chaos-restart')
    await until('serving', () => serve.out.some((l) => l.includes('proxy serving')))
    const handles: JobHandle[] = []
    for (let i = 0; i < JOBS; i++) handles.push(await client.enqueue({ proxy: 'chaos-restart' }, task(work, 256 << 10, 2)))
    await until('some jobs done', async () => (await readdir(work)).length >= 4)
    await redis.stop()
    await redis.start()
    const ends = await outcomes(handles)
    const q = new Queue(handles[0]!.queue, { connection: redisOptions({ mode: 'single', url: redis.url, nodes: [], sentinels: [], prefix: 'bull', tlsRejectUnauthorized: true }), prefix: 'bull' })
    let twice = 0
    let missing = 0
    for (const h of handles) {
      const job = await Job.fromId(q, h.id)
      if (job === undefined) missing++
      else if (job.attemptsStarted > 1 && job.returnvalue !== null) twice += (await q.getJobLogs(h.id)).logs.filter((l) => l.includes('"status":"success"')).length > 1 ? 1 : 0
    }
    await q.close()
    serve.child.kill('SIGTERM')
    await exitOf(serve)
    return {
      scenario: `redis-restart (AOF, ${JOBS} jobs queued, some running)`,
      figures: { outcomes: fmt(ends), lost: missing, 'completed twice': twice, 'raw lines': rawLines(serve).length },
      ok: missing === 0 && twice === 0 && (ends.get('success') ?? 0) === JOBS,
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
    const allowed = [...ends.keys()].every((k) => k === 'success' || k === 'failure:E_STALLED')
    const sorted = resumeMs.sort((a, b) => a - b)
    return {
      scenario: `sigkill (${KILLS} kills, ${jobs} streaming jobs, maxStalledCount 3)`,
      figures: { outcomes: fmt(ends), 'temporaries left': left.length, 'restart to a job running, median (s)': ((sorted[Math.floor(sorted.length / 2)] ?? 0) / 1000).toFixed(1) },
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
        kills: r.kills, outcomes: Object.entries(r.outcomes).map(([k, v]) => `${k}=${v}`).join(' '), 'verify --full problems': r.verifyProblems.length,
        backups: r.backups, duplicates: r.duplicates, 'max snapshots per VM': r.maxSnapshotsPerVm, 'temporaries left': r.temporariesLeft,
        'restart to a job running, median (s)': r.resumeMedianS.toFixed(1), ...(r.verifyProblems.length > 0 ? { 'first problem': r.verifyProblems[0]! } : {}),
      },
      ok: r.ok,
    }
  })
}

const scenarios: [string, () => Promise<Row>][] = [
  ['redis-outage', redisOutage],
  ['redis-restart', redisRestart],
  ['sigkill', sigkill],
  ['sigkill-real', sigkillRealRow],
]
const rows: Row[] = []
for (const [name, run] of scenarios) {
  if (filters.length > 0 && !filters.some((f) => name.includes(f))) continue
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

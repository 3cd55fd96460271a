/**
 * The `sigkill-real` chaos scenario, over real backup runs (no stand-ins): `backup-proxy serve` SIGKILLed
 * at random moments while it backs up VMs of the XAPI simulator (real engine, thread pool, a local remote)
 * and restarted each time. Afterwards: every job ended (success, or E_STALLED when killed more than
 * maxStalledCount times), `verify --full` finds no problem on the remote, no VM has more backups than
 * successful jobs (no duplicate), no VM keeps more snapshots than the delta base, and the time from a
 * restart to a job running again. Used by `npm run chaos` (bench/chaos.ts) and, with a few kills, by
 * test/workers/chaos-sigkill.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { verifyRemote } from '../src/backup/verify.js'
import { EnqueueClient, type JobHandle } from '../src/queue/client.js'
import type { TaskInputOf } from '../src/queue/tasks.js'
import { SealKey } from '../src/queue/seal.js'
import { createRemote } from '../src/remotes/index.js'
import { XapiClient } from '../src/xapi/client.js'
import { startXapiSimulator } from '../src/xapi/sim/index.js'

const root = new URL('../', import.meta.url).pathname
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export interface SigkillRealOptions {
  redisUrl: string
  /** scratch directory (the remote goes in it) */
  work: string
  kills: number
  vms: number
  diskBytes?: number
  maxStalledCount?: number
}

export interface SigkillRealResult {
  outcomes: Record<string, number>
  kills: number
  verifyProblems: string[]
  backups: number
  duplicates: number
  maxSnapshotsPerVm: number
  temporariesLeft: number
  resumeMedianS: number
  ok: boolean
}

interface Serve {
  child: ChildProcess
  out: string[]
}

function startServe(redisUrl: string, proxyId: string, seal: string, maxStalledCount: number): Serve {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--proxy', proxyId, '--redis-url', redisUrl, '--listen', '127.0.0.1:0', '--threads', '2', '--concurrency', '2'], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      BACKUP_PROXY_SECURITY_SEAL_KEY: seal,
      BACKUP_PROXY_WORKERS_LOCK_DURATION_MS: '3000',
      BACKUP_PROXY_WORKERS_STALLED_INTERVAL_MS: '1500',
      BACKUP_PROXY_WORKERS_MAX_STALLED_COUNT: String(maxStalledCount),
      BACKUP_PROXY_LOG_PRETTY: 'false',
      BACKUP_PROXY_LOG_LEVEL: 'info',
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

async function until(what: string, check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (check()) return true
    await sleep(100)
  }
  return false
}

async function stop(s: Serve, signal: NodeJS.Signals): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return
  const exited = new Promise((resolve) => s.child.once('exit', resolve))
  s.child.kill(signal)
  await exited
}

/** Kills serve at random moments (a job running, then 0.2–3 s) until every job ended or `kills` are done. */
async function killLoop(o: SigkillRealOptions, proxy: string, seal: string, handles: JobHandle[]): Promise<{ kills: number; resumeMs: number[] }> {
  const resumeMs: number[] = []
  let kills = 0
  const ended = async () => (await Promise.all(handles.map((h) => h.state()))).every((s) => s === 'completed' || s === 'failed')
  while (kills < o.kills && !(await ended())) {
    const serve = startServe(o.redisUrl, proxy, seal, o.maxStalledCount ?? 3)
    const t0 = performance.now()
    if (await until('a job running', () => serve.out.some((l) => l.includes('"job started"')), 120_000)) resumeMs.push(performance.now() - t0)
    await sleep(200 + Math.random() * 2800)
    await stop(serve, 'SIGKILL')
    kills++
  }
  return { kills, resumeMs }
}

export async function sigkillReal(o: SigkillRealOptions): Promise<SigkillRealResult> {
  const seal = SealKey.generate()
  const sim = await startXapiSimulator({ vms: o.vms, disksPerVm: 1, diskSizeBytes: o.diskBytes ?? 16 << 20, fillRatio: 0.5, seed: 18 })
  const remoteDir = join(o.work, 'remote')
  await mkdir(remoteDir, { recursive: true })
  const proxy = `chaos-real-${randomBytes(3).toString('hex')}`
  const client = new EnqueueClient({ redis: { mode: 'single', url: o.redisUrl, nodes: [], sentinels: [], prefix: 'bull', tlsRejectUnauthorized: true }, sealKey: seal, attempts: 3, backoffMs: 200 })
  try {
    const tasks: TaskInputOf<'backup.run'>[] = sim.listVms().map((vm, i) => ({
      kind: 'backup.run',
      job: { id: `${proxy}-vm${i}`, name: `chaos ${i}`, mode: 'delta', vms: { uuid: [vm.uuid] }, settings: { '': { exportRetention: 3 } } },
      schedule: { id: 'chaos' },
      remotes: { local: { url: `file://${remoteDir}` } },
      xapis: { sim: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
    }))
    const handles = await Promise.all(tasks.map((t) => client.enqueue({ proxy }, t)))
    const { kills, resumeMs } = await killLoop(o, proxy, seal.export(), handles)
    // a last serve, left alone, ends every job
    const last = startServe(o.redisUrl, proxy, seal.export(), o.maxStalledCount ?? 3)
    const summaries = await Promise.all(handles.map((h) => h.result()))
    await stop(last, 'SIGTERM')
    const outcomes: Record<string, number> = {}
    for (const s of summaries) {
      const k = s.status === 'success' ? 'success' : `${s.status}:${s.error?.code ?? 'uncoded'}`
      outcomes[k] = (outcomes[k] ?? 0) + 1
    }
    const remote = createRemote(`file://${remoteDir}`)
    await remote.open()
    const report = await verifyRemote(remote, { full: true }).finally(() => remote.close())
    // one backup per VM per successful job: more is a duplicate
    const metadata = (await readdir(join(remoteDir, 'xo-vm-backups'), { recursive: true }).catch(() => [] as string[])).filter((p) => /\/\d{8}T\d{6}Z\.json$/.test(p))
    const perVm = new Map<string, number>()
    for (const p of metadata) perVm.set(p.split('/')[0]!, (perVm.get(p.split('/')[0]!) ?? 0) + 1)
    const duplicates = [...perVm.values()].reduce((a, n) => a + Math.max(0, n - 1), 0)
    const temporariesLeft = (await readdir(remoteDir, { recursive: true })).filter((p) => p.split('/').pop()!.startsWith('.') && p.endsWith('.tmp')).length
    const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
    const snaps = new Map<string, number>()
    for (const vm of xapi.listVms({ includeSnapshots: true })) if (vm.is_a_snapshot) snaps.set(vm.snapshot_of, (snaps.get(vm.snapshot_of) ?? 0) + 1)
    await xapi.close()
    const maxSnapshotsPerVm = Math.max(0, ...snaps.values())
    const sorted = resumeMs.sort((a, b) => a - b)
    const allowed = Object.keys(outcomes).every((k) => k === 'success' || k === 'failure:E_STALLED')
    return {
      outcomes,
      kills,
      verifyProblems: report.problems.map((p) => `${p.kind} ${p.path}: ${p.message}`),
      backups: metadata.length,
      duplicates,
      maxSnapshotsPerVm,
      temporariesLeft,
      resumeMedianS: (sorted[Math.floor(sorted.length / 2)] ?? 0) / 1000,
      ok: allowed && report.problems.length === 0 && duplicates === 0 && maxSnapshotsPerVm <= 1 && metadata.length === (outcomes.success ?? 0),
    }
  } finally {
    await client.close().catch(() => undefined)
    await sim.close()
  }
}

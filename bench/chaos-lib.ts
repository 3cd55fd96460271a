/**
 * What the chaos scenarios share (bench/chaos.ts, bench/chaos-real.ts, bench/chaos-remotes.ts): waiting
 * on a condition, a private redis-server with AOF that can be stopped and started again, `backup-proxy
 * serve` processes started from the sources with their output kept line by line, and counting the
 * outcomes of jobs.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { Redis } from 'ioredis'
import type { JobSummary } from '../src/queue/task-log.js'

const root = new URL('../', import.meta.url).pathname
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

export async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as { port: number }).port
  await new Promise((resolve) => s.close(resolve))
  return port
}

/** Polls `check` every 100 ms; true once it held, false after `timeoutMs` (a check that throws counts as false). */
export async function waitUntil(check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await Promise.resolve().then(check).catch(() => false)) return true
    await sleep(100)
  }
  return false
}

/** As waitUntil, but a timeout is an error naming `what`. */
export async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 120_000): Promise<void> {
  if (!(await waitUntil(check, timeoutMs))) throw new Error(`timed out waiting for ${what}`)
}

/** A private redis-server on 127.0.0.1 (AOF, appendfsync always, noeviction), its data in `dir`. */
export class RedisServer {
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
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return
    const exited = new Promise((resolve) => c.once('exit', resolve))
    c.kill('SIGTERM')
    await exited
  }
}

/** A `backup-proxy serve` child and every line it printed (stdout and stderr). */
export interface Serve {
  child: ChildProcess
  out: string[]
}

interface ServeOptions {
  redisUrl: string
  proxyId: string
  /** the seal key, exported */
  seal: string
  concurrency: number
  /** more environment (timings, stand-ins...) */
  env?: Record<string, string>
}

/** Starts serve from the sources (threads 2, lock 3 s, stalled check 1.5 s, JSON logs) unless `env` says otherwise. */
export function startServe(o: ServeOptions): Serve {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--proxy', o.proxyId, '--redis-url', o.redisUrl, '--listen', '127.0.0.1:0', '--threads', '2', '--concurrency', String(o.concurrency)], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      BACKUP_PROXY_SECURITY_SEAL_KEY: o.seal,
      BACKUP_PROXY_WORKERS_LOCK_DURATION_MS: '3000',
      BACKUP_PROXY_WORKERS_STALLED_INTERVAL_MS: '1500',
      BACKUP_PROXY_LOG_PRETTY: 'false',
      ...o.env,
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

/** The exit code (null after a signal), once the process ended. */
export async function exitOf(s: Serve): Promise<number | null> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return s.child.exitCode
  return new Promise((resolve) => s.child.once('exit', (code) => resolve(code)))
}

/** Sends `signal` (unless the process already ended) and waits for its end. */
export async function stopServe(s: Serve, signal: NodeJS.Signals): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return
  const exited = exitOf(s)
  s.child.kill(signal)
  await exited
}

/** Output lines that are not a JSON log record. */
export function rawLines(s: Serve): string[] {
  return s.out.filter((l) => {
    if (l.trim() === '') return false
    try {
      return typeof JSON.parse(l) !== 'object'
    } catch {
      return true
    }
  })
}

/** `success`, or `<status>:<code>` (`uncoded` when the error has none), or `no summary`. */
export function outcomeKey(s: JobSummary | null): string {
  if (s === null) return 'no summary'
  return s.status === 'success' ? 'success' : `${s.status}:${s.error?.code ?? 'uncoded'}`
}

export function countBy<T>(items: readonly T[], key: (item: T) => string): Record<string, number> {
  const out: Record<string, number> = {}
  for (const i of items) out[key(i)] = (out[key(i)] ?? 0) + 1
  return out
}

export const fmtCounts = (counts: Record<string, number>) => Object.entries(counts).map(([k, v]) => `${k}=${v}`).join(' ')

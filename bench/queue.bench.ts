/**
 * Queue and thread-pool overhead.
 *
 * 1. No-op jobs, enqueue-to-start latency (p50/p99) and jobs/s: plain BullMQ (Queue.add + Worker with a
 *    no-op processor) against backup-proxy (EnqueueClient: validate + seal + dedup key; ProxyRuntime:
 *    unseal + validate + task-log root start/end + summary) on the same private Redis, same
 *    concurrency, same number of jobs, in the same run. Like with like:
 *    - plain BullMQ adds its jobs with the SAME job options the EnqueueClient sets (own job id, attempts +
 *      exponential backoff, removeOnComplete/removeOnFail, keepLogs: `JOB_OPTIONS` below mirrors
 *      client.ts) and runs a Worker with the same options as ProxyRuntime (prefix, concurrency,
 *      lock/stalled settings);
 *    - both sides are in steady state when the clock starts: connections open, scripts loaded, the
 *      queue registered, WARM_JOBS jobs already through the same queue and worker (and the stream
 *      thread booted: a proxy is long-lived, its start-up is not a per-job cost);
 *    - both stop the clock at the same point: when the processor of the last job returns.
 *    backup-proxy runs twice: with the same task every time (an orchestrator re-sending the same
 *    credentials and remote: the seal and validation memos of src/queue hit), and with every task
 *    distinct (its own remote URL and password: no memo ever hits, the worst case).
 *    Jobs are added with IN_FLIGHT adds in flight; interleaved rounds, the best round of each side is
 *    reported (the machine is shared). Both sides run the client and the worker in this process: CPU
 *    ms/job counts both (every thread of the process). The backup-proxy side runs from sources under
 *    tsx, like the rest of the bench (a tsc build is a little faster: no keepNames wrappers).
 * 2. Thread-pool dispatch overhead per task: StreamPool.run('standin.noop') (one MessageChannel per task,
 *    started/metrics/done messages) against raw Piscina running a trivial function, and a plain in-process
 *    async call, sequentially and 4 in flight.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Queue, Worker } from 'bullmq'
import { Piscina } from 'piscina'
import { compileConfig } from '../src/config/index.js'
import { silentLogger } from '../src/common/log.js'
import { EnqueueClient } from '../src/queue/client.js'
import { redisOptions } from '../src/queue/redis.js'
import { SealKey } from '../src/queue/seal.js'
import type { TaskInputOf } from '../src/queue/tasks.js'
import { StreamPool } from '../src/workers/pool.js'
import { ProcessorRegistry } from '../src/workers/processors.js'
import { ProxyRuntime } from '../src/workers/proxy.js'
import { startRedis } from '../test/services/redis.js'
import { measure, type BenchContext, type BenchRow } from './lib.js'

const CONCURRENCY = 4
const IN_FLIGHT = 8
const ROUNDS = 3
const WARM_JOBS = 50

/** The options EnqueueClient.enqueue sets on a no-dedup task with the default attempts/backoff. */
const JOB_OPTIONS = {
  attempts: 3,
  backoff: { type: 'exponential', delay: 10_000 },
  removeOnComplete: { age: 7 * 86400, count: 1000 },
  removeOnFail: { age: 30 * 86400, count: 5000 },
  keepLogs: 5000,
} as const

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN
}

async function addAll(n: number, add: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
    while (next < n) await add(next++)
  }))
}

/**
 * Counts processor ends (`all` resolves at the `n`th since the last reset) and, between `startSingle()`
 * and its end, records the time from the start of each `add` to the start of its processor.
 */
function waiter(): { done: () => void; started: () => void; reset: (n: number) => Promise<void>; addStarting: () => void; single: number[] } {
  let left = 0
  let resolve: () => void = () => undefined
  let addAt: number | undefined
  const single: number[] = []
  return {
    done: () => void (--left === 0 && resolve()),
    started: () => {
      if (addAt !== undefined) single.push(performance.now() - addAt)
      addAt = undefined
    },
    reset: (n) => {
      left = n
      return new Promise<void>((r) => (resolve = r))
    },
    addStarting: () => void (addAt = performance.now()),
    single,
  }
}

type RoundResult = { latencies: number[]; single: number[]; m: Awaited<ReturnType<typeof measure>> }

/** Jobs enqueued one at a time (the next once the previous one ran) for the unloaded latency. */
const SINGLE_JOBS = 100

/**
 * Warm-up jobs through the same queue and worker, then `n` timed ones (IN_FLIGHT adds in flight: the
 * latency includes the backlog), then SINGLE_JOBS one at a time (from the call to add/enqueue to the
 * start of the processor, in µs-resolution time: the enqueue-to-start latency alone).
 */
async function timed(n: number, w: ReturnType<typeof waiter>, latencies: number[], add: (i: number) => Promise<void>): Promise<RoundResult> {
  const warm = w.reset(WARM_JOBS)
  await addAll(WARM_JOBS, add)
  await warm
  latencies.length = 0
  const all = w.reset(n)
  const m = await measure(async () => {
    await addAll(n, add)
    await all
  })
  const loaded = [...latencies]
  for (let i = 0; i < SINGLE_JOBS; i++) {
    const one = w.reset(1)
    w.addStarting()
    await add(i)
    await one
  }
  return { latencies: loaded, single: [...w.single], m }
}

async function plainBullmq(redisUrl: string, n: number, name: string): Promise<RoundResult> {
  const config = compileConfig({ redis: { url: redisUrl } })
  const connection = redisOptions(config.redis)
  const prefix = config.redis.prefix
  const queue = new Queue(name, { connection, prefix })
  const latencies: number[] = []
  const w = waiter()
  const worker = new Worker(name, async (job) => {
    w.started()
    latencies.push(Date.now() - (job.data as { t: number }).t)
    // the point where ProxyRuntime reports a job's end (its onJobEnd), before BullMQ records it
    w.done()
    return Promise.resolve({ ok: true })
  }, {
    // the Worker options ProxyRuntime sets
    connection,
    prefix,
    concurrency: CONCURRENCY,
    lockDuration: config.workers.lockDurationMs,
    stalledInterval: config.workers.stalledIntervalMs,
    maxStalledCount: config.workers.maxStalledCount,
  })
  await Promise.all([worker.waitUntilReady(), queue.waitUntilReady()])
  let seq = 0
  const r = await timed(n, w, latencies, async () => void (await queue.add('noop', { t: Date.now(), i: seq }, { ...JOB_OPTIONS, jobId: `noop.${name}.${seq++}` })))
  await worker.close()
  await queue.obliterate({ force: true })
  await queue.close()
  return r
}

async function ours(redisUrl: string, n: number, proxyId: string, distinct = false): Promise<RoundResult> {
  const sealKey = SealKey.generate()
  const config = compileConfig({ redis: { url: redisUrl }, proxy: { id: proxyId }, workers: { concurrency: CONCURRENCY, threads: 1 }, log: { level: 'silent' } })
  const latencies: number[] = []
  const w = waiter()
  const processors = new ProcessorRegistry().register('remote.test', (ctx) => {
    w.started()
    latencies.push(Date.now() - ctx.job.enqueuedAt)
    return Promise.resolve({ status: 'success' })
  })
  const runtime = new ProxyRuntime({ config, processors, sealKey, logger: silentLogger, onJobEnd: w.done })
  await runtime.start()
  // the stream thread boots (module load: hundreds of ms of CPU in a fresh process) before the clock
  await runtime.pool.run('standin.noop', { value: 0 })
  const client = new EnqueueClient({ redis: config.redis, sealKey })
  const task: TaskInputOf<'remote.test'> = { kind: 'remote.test', remote: { url: 'smb://user:pw@WORKGROUP\\\\host\\share' } }
  let seq = 0
  const taskFor = (): TaskInputOf<'remote.test'> => {
    const i = seq++
    return distinct ? { kind: 'remote.test', remote: { url: `smb://user:pw${i}@WORKGROUP\\\\host\\share${i}` } } : task
  }
  const r = await timed(n, w, latencies, async () => void (await client.enqueue({ proxy: proxyId }, taskFor())))
  await runtime.shutdown()
  await client.queue(runtime.queues[0]!).obliterate({ force: true })
  await client.close()
  return r
}

async function dispatch(tmpDir: string, n: number): Promise<BenchRow[]> {
  const rows: BenchRow[] = []
  const trivial = join(tmpDir, 'trivial.mjs')
  await writeFile(trivial, 'export default (x) => x\n')
  const raw = new Piscina({ filename: trivial, minThreads: 2, maxThreads: 2, atomics: 'disabled' })
  const pool = new StreamPool({ threads: 2 })
  const local = async (x: { value: number }) => Promise.resolve(x)
  // warm up both pools (thread start, module load, JIT on both sides of the port): steady state, as in a
  // proxy that has been running
  for (let i = 0; i < 200; i++) await Promise.all([raw.run({ value: i }), raw.run({ value: i }), pool.run('standin.noop', { value: i }), pool.run('standin.noop', { value: i })])
  const cases: [string, (i: number) => Promise<unknown>, string | undefined][] = [
    ['in-process async call', (i) => local({ value: i }), undefined],
    ['raw Piscina run', (i) => raw.run({ value: i }), undefined],
    ['StreamPool.run (port, cancel, metrics)', (i) => pool.run('standin.noop', { value: i }), 'raw Piscina run'],
  ]
  for (const inFlight of [1, 4]) {
    for (const [name, fn, baseline] of cases) {
      let next = 0
      const m = await measure(async () => {
        await Promise.all(Array.from({ length: inFlight }, async () => {
          while (next < n) await fn(next++)
        }))
      })
      rows.push({
        group: `thread dispatch (${inFlight} in flight)`,
        name,
        bytes: 0,
        seconds: m.seconds,
        cpuSeconds: m.cpuSeconds,
        ...(baseline === undefined ? {} : { baseline }),
        extra: { tasks: n, usPerTask: (m.seconds / n) * 1e6, cpuUsPerTask: (m.cpuSeconds / n) * 1e6 },
      })
    }
  }
  await Promise.all([raw.close(), pool.close()])
  return rows
}

export default async function queueBench(ctx: BenchContext): Promise<BenchRow[]> {
  const n = Math.max(100, Math.round(2000 * ctx.scale))
  const redis = await startRedis()
  const rows: BenchRow[] = []
  try {
    // warm-up of both paths (JIT)
    await plainBullmq(redis.url, 100, 'warm-plain')
    await ours(redis.url, 100, 'warm')
    // interleaved rounds, best round of each side: the machine is shared, a single run is noisy
    const rounds: { plain: RoundResult[]; ours: RoundResult[]; distinct: RoundResult[] } = { plain: [], ours: [], distinct: [] }
    for (let round = 0; round < ROUNDS; round++) {
      rounds.plain.push(await plainBullmq(redis.url, n, `bench-plain-${round}`))
      rounds.ours.push(await ours(redis.url, n, `bench-${round}`))
      rounds.distinct.push(await ours(redis.url, n, `bench-distinct-${round}`, true))
    }
    const best = (rs: RoundResult[]) => rs.reduce((a, b) => (b.m.seconds < a.m.seconds ? b : a))
    const results: [string, RoundResult][] = [
      ['plain BullMQ', best(rounds.plain)],
      ['backup-proxy', best(rounds.ours)],
      ['backup-proxy, every task distinct', best(rounds.distinct)],
    ]
    const base = results[0]![1]
    for (const [name, r] of results) {
      const sorted = [...r.latencies].sort((a, b) => a - b)
      const single = [...r.single].sort((a, b) => a - b)
      const jobsPerS = n / r.m.seconds
      ctx.log(`${name}: ${n} no-op jobs, ${jobsPerS.toFixed(0)} jobs/s, ${((r.m.cpuSeconds / n) * 1000).toFixed(3)} CPU ms/job, enqueue-to-start p50 ${percentile(sorted, 50)} ms p99 ${percentile(sorted, 99)} ms (${IN_FLIGHT} adds in flight), p50 ${percentile(single, 50).toFixed(2)} ms p99 ${percentile(single, 99).toFixed(2)} ms (one at a time)`)
      rows.push({
        group: `no-op jobs (concurrency ${CONCURRENCY}, ${IN_FLIGHT} adds in flight)`,
        name,
        bytes: 0,
        seconds: r.m.seconds,
        cpuSeconds: r.m.cpuSeconds,
        peakRssMiB: r.m.peakRssMiB,
        ...(name === 'plain BullMQ' ? {} : { baseline: 'plain BullMQ' }),
        extra: {
          jobs: n,
          p50Ms: percentile(sorted, 50),
          p99Ms: percentile(sorted, 99),
          p50MsOneAtATime: percentile(single, 50),
          p99MsOneAtATime: percentile(single, 99),
          jobsPerS,
          cpuMsPerJob: (r.m.cpuSeconds / n) * 1000,
          ...(name === 'plain BullMQ' ? {} : { throughputVsBaseline: jobsPerS / (n / base.m.seconds) }),
        },
      })
    }
  } finally {
    await redis.destroy()
  }
  rows.push(...(await dispatch(ctx.tmpDir, Math.max(200, Math.round(2000 * ctx.scale)))))
  return rows
}

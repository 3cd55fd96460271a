/**
 * The measured process of backup-rss.bench.ts, run compiled under plain node (as the proxy ships: no
 * TypeScript loader in any thread): `serve()` itself — the proxy's HTTP endpoints, its BullMQ workers, its
 * stream pool of BENCH_RSS_THREADS streams (on threads started on demand) and the engine's processors, configured from
 * BENCH_RSS_CONFIG (JSON: redis URL, proxy id, seal key...). Talks to the bench on stdin/stdout, one JSON
 * line each way:
 *   - once serving and settled (SETTLE_MS): `{ idleRssMiB, idleThreads }` (RSS of the idle proxy, threads
 *     alive then); the bench then enqueues a backup.run into this proxy's queue and waits for its result;
 *   - on the line `stop`: `{ peakRssMiB, cpuSeconds, disksInFlight, maxThreads, mainHeapMiB, mainBuffersMiB }`
 *     — the process's peak RSS (VmHWM: main thread + stream threads, whole life), CPU since idle (every
 *     thread), the most streams running at once and the most threads alive (sampled every 20 ms), the main
 *     thread's V8 heap and buffers then — then the proxy stops and exits.
 */
import { readFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { applyServeGcTuning } from '../src/common/gc-tuning.js'
import type { ProxyRuntime } from '../src/workers/proxy.js'

// as `backup-proxy serve` does, before the proxy's modules load
applyServeGcTuning()
const [{ silentLogger }, { compileConfig }, { serve }] = await Promise.all([import('../src/common/log.js'), import('../src/config/index.js'), import('../src/workers/serve.js')])

const SETTLE_MS = 2000

async function statusMiB(field: 'VmHWM' | 'VmRSS'): Promise<number> {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(await readFile('/proc/self/status', 'utf8'))
  if (m === null) throw new Error(`no ${field} in /proc/self/status`)
  return Number(m[1]) / 1024
}

const config = compileConfig(JSON.parse(process.env.BENCH_RSS_CONFIG ?? 'null'))
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()

async function measure(runtime: ProxyRuntime): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS))
  const idleThreads = runtime.poolStats()?.started ?? 0
  console.log(JSON.stringify({ idleRssMiB: await statusMiB('VmRSS'), idleThreads, idleHeapMiB: process.memoryUsage().heapTotal / 2 ** 20 }))
  const cpu0 = process.cpuUsage()
  let disksInFlight = 0
  let maxThreads = 0
  const sampler = setInterval(() => {
    const s = runtime.poolStats()
    disksInFlight = Math.max(disksInFlight, s?.busy ?? 0)
    maxThreads = Math.max(maxThreads, s?.started ?? 0)
  }, 20)
  try {
    const line = await lines.next()
    if (line.done === true || line.value !== 'stop') throw new Error(`expected "stop" on stdin, got ${JSON.stringify(line.value)}`)
    const cpu = process.cpuUsage(cpu0)
    const main = process.memoryUsage() // this thread's V8 heap and buffers (the stream threads have their own)
    console.log(JSON.stringify({ peakRssMiB: await statusMiB('VmHWM'), cpuSeconds: (cpu.user + cpu.system) / 1e6, disksInFlight, maxThreads, mainHeapMiB: main.heapTotal / 2 ** 20, mainBuffersMiB: main.arrayBuffers / 2 ** 20 }))
  } finally {
    clearInterval(sampler)
    await runtime.shutdown()
  }
}

let measured: Promise<void> | undefined
await serve({ config, logger: silentLogger, handleSignals: false, onReady: (runtime) => void (measured = measure(runtime).finally(() => runtime.shutdown())) })
await measured
process.exit(0) // the stdin reader would keep the process alive

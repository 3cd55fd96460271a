/**
 * `backup-proxy demo`: the whole product on one machine, with nothing but Redis (found or started):
 *
 *  1. an XAPI simulator with a few VMs (sparse disks, deterministic content);
 *  2. a proxy (in this process: BullMQ workers + the disk thread pool, on a private queue);
 *  3. a full then a delta `backup.run` enqueued through the queue to a local remote, with progress;
 *  4. a full verify of the remote, and a restore of one disk compared byte for byte with the source.
 *
 * Succeeds (exit 0) only when both runs succeeded, verify found no problem, and the restored disk equals
 * the simulator's disk. The backups stay in the remote directory, which is printed with the commands to
 * look at them.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Readable } from 'node:stream'
import { BackupProxyError, errorCode, toError } from '../../common/errors.js'
import { silentLogger } from '../../common/log.js'
import { formatBytes, formatDurationMs } from '../../common/units.js'
import { compileConfig } from '../../config/index.js'
import { EnqueueClient } from '../../queue/client.js'
import { proxyQueue } from '../../queue/names.js'
import { describeRedis, type RedisConfig } from '../../queue/redis.js'
import { SealKey } from '../../queue/seal.js'
import type { JobSummary } from '../../queue/task-log.js'
import { createRemote } from '../../remotes/index.js'
import { builtinProcessors } from '../../workers/builtin-processors.js'
import { ProxyRuntime } from '../../workers/proxy.js'
import { startXapiSimulator, type XapiSimulator } from '../../xapi/sim/index.js'
import { restoreDiskToFile } from '../../backup/restore.js'
import { verifyRemote } from '../../backup/verify.js'
import { progressView } from './progress.js'
import { demoRedis, removePrefix, type DemoRedis } from './redis.js'

interface DemoOptions {
  vms: number
  diskSizeBytes: number
  /** local remote directory; default a new temp dir (kept) */
  dir?: string
  redisUrl: string
  /** the whole `redis` configuration (mode, sentinels, cluster nodes, TLS...); its URL is redisUrl's */
  redis?: RedisConfig
  threads?: number
  out: (text: string) => void
  isTTY: boolean
  signal?: AbortSignal
}

interface DemoResult {
  ok: boolean
  dir: string
  bytesWritten: number
  durationMs: number
}

const FILL_RATIO = 0.5
const BLOCK = 2 * 1024 * 1024

async function sha256(stream: Readable): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of stream) h.update(chunk as Buffer)
  return h.digest('hex')
}

interface VmRunResult {
  sizeBytes: number
  readBytes: number
  full: boolean
}

function vmResults(summary: JobSummary): { ok: VmRunResult[]; failed: string[] } {
  const ok: VmRunResult[] = []
  const failed: string[] = []
  for (const t of summary.tasks ?? []) {
    if (t.status === 'success') ok.push(t.result as unknown as VmRunResult)
    else {
      const r = t.result as { message?: unknown } | undefined
      failed.push(`${String((t.data as { id?: unknown } | undefined)?.id)}: ${typeof r?.message === 'string' ? r.message : t.status}`)
    }
  }
  return { ok, failed }
}

/** What one demo run holds: its options, its output, where its backups go, and its totals. */
interface Demo {
  readonly o: DemoOptions
  readonly say: (line: string) => void
  readonly dir: string
  readonly remoteUrl: string
  bytesWritten: number
  /** MiB/s of each run, from the first byte reported */
  readonly streamRates: number[]
}

/** What the demo started, recorded as it starts so that stopServices stops exactly that. */
interface DemoServices {
  redis?: DemoRedis
  sim?: XapiSimulator
  proxy?: ProxyRuntime
  client?: EnqueueClient
  redisConfig?: RedisConfig
}

interface Started {
  sim: XapiSimulator
  client: EnqueueClient
  proxyId: string
}

/** Step 1: Redis (the configured one, or found or started), the simulator, a proxy on a private prefix, a client. */
async function startServices(demo: Demo, s: DemoServices): Promise<Started> {
  const { o, say } = demo
  say('backup-proxy demo')
  // cluster and sentinel modes: the configured Redis, never a private one
  const clustered = o.redis !== undefined && o.redis.mode !== 'single'
  const redis = clustered ? { url: o.redisUrl, private: false, stop: () => Promise.resolve() } : await demoRedis(o.redisUrl, say)
  s.redis = redis
  say(`  Redis        ${clustered ? describeRedis(o.redis!) : redis.url}${redis.private ? ' (private, removed at the end)' : ''}`)
  const sim = await startXapiSimulator({ vms: o.vms, disksPerVm: 1, diskSizeBytes: o.diskSizeBytes, fillRatio: FILL_RATIO, seed: 20261125 })
  s.sim = sim
  say(`  XAPI         simulator at ${sim.url}: ${sim.listVms().length} VM(s), one ${formatBytes(o.diskSizeBytes)} disk each (${FILL_RATIO * 100}% allocated)`)
  const sealKey = SealKey.generate()
  const proxyId = `demo-${randomBytes(3).toString('hex')}`
  // a prefix of its own: everything the demo writes to Redis is under it, and removed at the end
  const config = compileConfig({
    redis: { ...o.redis, url: redis.url, prefix: `bp-demo-${randomBytes(4).toString('hex')}` },
    proxy: { id: proxyId },
    security: { sealKey: sealKey.export() },
    log: { level: 'silent' },
    workers: { threads: o.threads ?? 2, concurrency: 1, attempts: 1 },
  })
  s.redisConfig = config.redis
  s.proxy = new ProxyRuntime({ config, processors: builtinProcessors({ standIns: false }), sealKey, logger: silentLogger })
  await s.proxy.start()
  say(`  proxy        "${proxyId}" in this process (queue ${proxyQueue(proxyId)}, ${config.workers.threads} stream threads)`)
  say(`  remote       ${demo.remoteUrl}`)
  const client = new EnqueueClient({ redis: config.redis, sealKey, attempts: 1 })
  s.client = client
  return { sim, client, proxyId }
}

/** Step 2 (twice): one `backup.run` through the queue, with a progress view; throws unless it succeeded. */
async function runBackup(demo: Demo, started: Started, label: string, estimateBytes: number): Promise<VmRunResult[]> {
  const { o, say } = demo
  const { sim } = started
  const task = {
    kind: 'backup.run' as const,
    job: { id: 'demo', name: 'demo', mode: 'delta' as const, vms: { uuid: sim.listVms().map((v) => v.uuid) }, settings: { '': { exportRetention: 7, concurrency: 2 } } },
    schedule: { id: 'demo-schedule' },
    remotes: { local: { url: demo.remoteUrl } },
    xapis: { sim: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
  }
  const view = progressView(label, o.out, o.isTTY)
  const handle = await started.client.enqueue({ proxy: started.proxyId }, task)
  let tFirst: number | undefined
  const stop = handle.onProgress((p) => {
    if ((p.doneBytes ?? 0) > 0) tFirst ??= performance.now()
    view.update(p.doneBytes ?? 0, estimateBytes, p.message)
  })
  await handle.ready()
  const t = performance.now()
  let summary: JobSummary
  try {
    summary = await handle.result(o.signal)
  } finally {
    stop()
    handle.stop()
  }
  const { ok: done, failed } = vmResults(summary)
  const read = done.reduce((a, r) => a + r.readBytes, 0)
  const written = done.reduce((a, r) => a + r.sizeBytes, 0)
  demo.bytesWritten += written
  const end = performance.now()
  // streaming rate from the first byte reported (excludes queue pick-up, thread start, snapshot)
  const streamSeconds = Math.max(0.001, (end - (tFirst ?? t)) / 1000)
  demo.streamRates.push(read / 1024 / 1024 / streamSeconds)
  if (summary.status !== 'success') {
    view.done(`FAILED (${summary.status})`)
    for (const f of failed) say(`    ${f}`)
    if (summary.error !== undefined) say(`    ${summary.error.message}`)
    throw new BackupProxyError('E_BACKUP', `the ${label} backup run ended in ${summary.status}`)
  }
  view.done(`${done.length} VM(s), ${formatBytes(written)} written, job took ${((end - t) / 1000).toFixed(1)}s, disks streamed at ≈${demo.streamRates.at(-1)!.toFixed(0)} MiB/s (${handle.id})`)
  return done
}

/** Step 2: a full run, about 5% of each disk written, then a delta run. */
async function runFullThenDelta(demo: Demo, started: Started): Promise<void> {
  const { sim } = started
  const vms = sim.listVms()
  demo.say('')
  const full = await runBackup(demo, started, 'full ', vms.length * demo.o.diskSizeBytes * FILL_RATIO)
  if (!full.every((r) => r.full)) throw new BackupProxyError('E_BACKUP', 'the first run should have been a full backup')
  let changed = 0
  for (const vm of vms) for (const d of sim.writeBlocks(vm.uuid, { ratio: 0.05 })) changed += d.blocks.length
  const delta = await runBackup(demo, started, 'delta', changed * BLOCK)
  if (delta.some((r) => r.full)) throw new BackupProxyError('E_BACKUP', 'the second run should have been a delta')
}

/** Step 3: verifies everything on the remote (every block read back), restores one disk and compares it with the source. */
async function verifyAndRestore(demo: Demo, sim: XapiSimulator): Promise<void> {
  const { o, say } = demo
  const signal = o.signal === undefined ? {} : { signal: o.signal }
  const remote = createRemote(demo.remoteUrl)
  await remote.open()
  try {
    const report = await verifyRemote(remote, { full: true, ...signal })
    if (report.problems.length > 0) {
      say('  verify: PROBLEMS')
      for (const p of report.problems) say(`    ${p.kind} ${p.path}: ${p.message}`)
      throw new BackupProxyError('E_BACKUP', `verify found ${report.problems.length} problem(s)`)
    }
    say(`  verify: ${report.backups} backups, ${report.vhds} VHDs, chains valid, ${formatBytes(report.readBytes)} read back, no orphan`)
    const vm = sim.listVms()[0]!
    const vdi = vm.vdis[0]!
    const restoreDir = join(demo.dir, 'restored')
    await mkdir(restoreDir, { recursive: true })
    const out = join(restoreDir, `${vdi.uuid}.raw`)
    const r = await restoreDiskToFile(remote, { vmUuid: vm.uuid, vdiUuid: vdi.uuid }, out, signal)
    const [restored, source] = await Promise.all([sha256(createReadStream(out)), sha256(sim.rawDiskContent(vdi.uuid))])
    if (restored !== source) throw new BackupProxyError('E_BACKUP', `the restored disk ${out} differs from the source disk ${vdi.uuid}`)
    say(`  restore: disk ${vdi.uuid} of ${r.timestamp} (chain of ${r.chain.length}) → ${out}: identical to the source (sha256 ${restored.slice(0, 16)}…)`)
  } finally {
    await remote.close()
  }
}

/** Last step: stops what started, last started first, and removes the demo's Redis keys. */
async function stopServices(demo: Demo, s: DemoServices): Promise<void> {
  await s.client?.close().catch(() => undefined)
  await s.proxy?.shutdown({ force: true }).catch(() => undefined)
  await s.sim?.close().catch(() => undefined)
  const redisConfig = s.redisConfig
  if (redisConfig !== undefined) {
    await removePrefix(redisConfig, redisConfig.prefix).catch((error: unknown) => demo.say(`could not remove the demo's Redis keys (${redisConfig.prefix}:*): ${toError(error).message}`))
  }
  await s.redis?.stop().catch(() => undefined)
}

function sayDone(demo: Demo, sim: XapiSimulator | undefined, durationMs: number): void {
  const { say, remoteUrl } = demo
  const vm = sim?.listVms()[0]
  say('')
  say(`done in ${formatDurationMs(durationMs)}: full + delta backups, ${formatBytes(demo.bytesWritten)} written (full streamed at ≈${(demo.streamRates[0] ?? 0).toFixed(0)} MiB/s), verified, restored identical`)
  say(`backups are in ${demo.dir}/xo-vm-backups (Xen Orchestra's layout). Try:`)
  say(`  npx backup-proxy verify ${remoteUrl}`)
  if (vm !== undefined) say(`  npx backup-proxy restore ${remoteUrl} --vm ${vm.uuid} --disk ${vm.vdis[0]!.uuid} --to /tmp/disk.vhd`)
}

export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const t0 = performance.now()
  const dir = resolve(o.dir ?? (await mkdtemp(join(tmpdir(), 'backup-proxy-demo-'))))
  await mkdir(dir, { recursive: true })
  const demo: Demo = { o, say: (line) => o.out(`${line}\n`), dir, remoteUrl: `file://${dir}`, bytesWritten: 0, streamRates: [] }
  const services: DemoServices = {}
  let ok = false
  try {
    const started = await startServices(demo, services)
    await runFullThenDelta(demo, started)
    await verifyAndRestore(demo, started.sim)
    ok = true
  } catch (error) {
    if (errorCode(error) === 'E_CANCELLED') demo.say('\ncancelled')
    throw toError(error)
  } finally {
    await stopServices(demo, services)
    if (ok) sayDone(demo, services.sim, performance.now() - t0)
  }
  return { ok, dir, bytesWritten: demo.bytesWritten, durationMs: performance.now() - t0 }
}

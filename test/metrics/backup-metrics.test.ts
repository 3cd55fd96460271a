/**
 * End to end through the stream threads: a real XAPI simulator, the real backup engine (runBackup) with
 * each disk exported in a real Piscina thread of the StreamPool, thread metric deltas fed to the
 * registry by metricsHooks, the run's main-thread remotes attached with attachRemoteMetrics, /metrics
 * served over HTTP. After a full and a delta backup, the bytes written per remote that /metrics reports
 * equal ALL the bytes on each remote (disk images written in the threads + metadata written on the main
 * thread, nothing deleted with this retention), and remote operations are counted from both threads.
 * A run with an unusable second target reports remote_up 1 for the working one and 0 for it.
 * (Through the BullMQ queue the same deltas take the same path: ProxyRuntime passes onMetrics to its
 * StreamPool.)
 */
import { readdir, stat, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { poolExporter } from '../../src/backup/pool-exporter.js'
import { runBackup } from '../../src/backup/run.js'
import { attachRemoteMetrics, createMetrics, metricsHooks, startHttpServer, type HttpServerHandle, type RemoteEventSource } from '../../src/metrics/index.js'
import { StreamPool } from '../../src/workers/pool.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, MiB, runTask, startSim } from '../backup/helpers/fixture.js'

/**
 * Bytes of every file under a remote's root, of its disk images (and how many) and of its VM caches.
 * A run writes each VM's cache.json.gz twice (after publishing, after retention: the same content when
 * retention deletes nothing), so bytes written by a run = what it added on the remote + its final cache.
 */
async function remoteBytes(root: string): Promise<{ bytes: number; imageBytes: number; images: number; cacheBytes: number }> {
  let bytes = 0
  let imageBytes = 0
  let images = 0
  let cacheBytes = 0
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue
    const path = join(entry.parentPath, entry.name)
    const size = (await stat(path)).size
    bytes += size
    if (path.includes('/vdis/')) {
      imageBytes += size
      images++
    }
    if (entry.name === 'cache.json.gz') cacheBytes += size
  }
  return { bytes, imageBytes, images, cacheBytes }
}

function sampleOf(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  if (line === undefined) throw new Error(`no series ${series} in /metrics`)
  return Number(line.slice(series.length + 1))
}

describe('metrics of a backup through the stream threads', () => {
  let sim: XapiSimulator
  let dir: Awaited<ReturnType<typeof makeTempDir>>
  let pool: StreamPool
  let server: HttpServerHandle
  const metrics = createMetrics()
  const refused: string[] = []

  beforeAll(async () => {
    sim = await startSim({ vms: 1, disksPerVm: 2, diskSizeBytes: 16 * MiB })
    dir = await makeTempDir('bp-backup-metrics-')
    const hooks = metricsHooks(metrics, { warn: (_o: unknown, msg?: string) => void refused.push(msg ?? '') })
    pool = new StreamPool({ threads: 2, onMetrics: hooks.onMetrics })
    server = await startHttpServer({ listen: '127.0.0.1:0', metrics, isReady: () => Promise.resolve({ ready: true, reasons: [] }) })
  })

  afterAll(async () => {
    await server?.close()
    await pool?.close()
    await sim?.close()
    await dir?.remove()
  })

  const remoteMetrics = (remote: RemoteEventSource, remoteId: string) => attachRemoteMetrics(remote, metrics, remoteId)

  it('reports bytes written per remote equal to all the bytes on each remote, after a full and a delta', async () => {
    const vm = sim.listVms()[0]!
    await Promise.all(['a', 'b'].map((r) => mkdir(join(dir.path, r))))
    const task = runTask(sim, [vm.uuid], { a: `file://${dir.path}/a`, b: `file://${dir.path}/b` }, { exportRetention: 10 })
    const env = { defaults, exporter: poolExporter(pool), signal: new AbortController().signal, remoteMetrics }

    const full = await runBackup(task, env)
    expect(full.status, JSON.stringify(full)).toBe('success')
    // the full run's cache is overwritten by the delta run: note its size now
    const firstCacheBytes = new Map<string, number>()
    for (const remote of ['a', 'b']) firstCacheBytes.set(remote, (await remoteBytes(join(dir.path, remote))).cacheBytes)
    sim.writeBlocks(vm.uuid, { blocks: 3 })
    const delta = await runBackup(task, env)
    expect(delta.status, JSON.stringify(delta)).toBe('success')

    const text = await (await fetch(`${server.url}/metrics`)).text()
    for (const remote of ['a', 'b']) {
      const onRemote = await remoteBytes(join(dir.path, remote))
      expect(onRemote.images).toBeGreaterThanOrEqual(4) // 2 disks x (full + delta)
      expect(onRemote.bytes).toBeGreaterThan(onRemote.imageBytes) // metadata is there too
      const firstCache = firstCacheBytes.get(remote)!
      expect(firstCache).toBeGreaterThan(0)
      // images + metadata on the remote, plus the caches overwritten since: 2 per run, the last one is on the remote
      const expected = onRemote.bytes + 2 * firstCache + onRemote.cacheBytes
      expect(sampleOf(text, `backup_proxy_bytes_written_total{remote="${remote}"}`)).toBe(expected)
      // opened once per run on the main thread; in the stream threads once per thread that took a disk
      // (the thread's RemoteCache reuses it), at most once per disk per run if the cache went idle
      const opens = sampleOf(text, `backup_proxy_remote_operations_total{remote="${remote}",op="open",status="ok"}`)
      expect(opens).toBeGreaterThanOrEqual(2 + 1)
      expect(opens).toBeLessThanOrEqual(2 + 2 * 2)
      expect(sampleOf(text, `backup_proxy_remote_up{remote="${remote}"}`)).toBe(1)
    }
    expect(sampleOf(text, 'backup_proxy_bytes_read_total')).toBeGreaterThan(0)
    expect(sampleOf(text, 'backup_proxy_disk_export_duration_seconds_count')).toBe(4) // 2 disks x 2 runs
    expect(text).not.toMatch(/^backup_proxy_metric_deltas_rejected_total\{/m)
    expect(refused).toEqual([])
  })

  it('reports remote_up 1 for a working target and 0 for one that cannot be opened', async () => {
    const vm = sim.listVms()[0]!
    await mkdir(join(dir.path, 'up'))
    // the root of `down` does not exist: LocalRemote.open fails, the run goes on with `up` alone
    const task = runTask(sim, [vm.uuid], { up: `file://${dir.path}/up`, down: `file://${dir.path}/does-not-exist` }, { exportRetention: 10 })
    const summary = await runBackup(task, { defaults, exporter: poolExporter(pool), signal: new AbortController().signal, remoteMetrics })
    expect(summary.status, JSON.stringify(summary)).toBe('success')

    const text = await (await fetch(`${server.url}/metrics`)).text()
    expect(sampleOf(text, 'backup_proxy_remote_up{remote="up"}')).toBe(1)
    expect(sampleOf(text, 'backup_proxy_remote_up{remote="down"}')).toBe(0)
    expect(sampleOf(text, 'backup_proxy_remote_operations_total{remote="down",op="open",status="error"}')).toBe(1)
    expect(text).not.toMatch(/^backup_proxy_bytes_written_total\{remote="down"\}/m)
    const up = await remoteBytes(join(dir.path, 'up'))
    expect(sampleOf(text, 'backup_proxy_bytes_written_total{remote="up"}')).toBe(up.bytes + up.cacheBytes) // cache written twice
    expect(text).not.toContain(dir.path) // labels are ids, never URLs or paths
    expect(refused).toEqual([])
  })
})

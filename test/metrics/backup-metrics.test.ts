/**
 * End to end through the stream threads: a real XAPI simulator, the real backup engine (runBackup) with
 * each disk exported in a real Piscina thread of the StreamPool, thread metric deltas fed to the
 * registry by metricsHooks, /metrics served over HTTP. After a full and a delta backup, the bytes
 * written per remote that /metrics reports equal the bytes of the disk images on each remote.
 * (Through the BullMQ queue the same deltas take the same path: ProxyRuntime passes onMetrics to its
 * StreamPool.)
 */
import { readdir, stat, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { poolExporter } from '../../src/backup/pool-exporter.js'
import { runBackup } from '../../src/backup/run.js'
import { createMetrics, metricsHooks, startHttpServer, type HttpServerHandle } from '../../src/metrics/index.js'
import { StreamPool } from '../../src/workers/pool.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, MiB, runTask, startSim } from '../backup/helpers/fixture.js'

/** Bytes of the disk images (VhdFile or VhdDirectory files) under a remote's root. */
async function diskImageBytes(root: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0
  let files = 0
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue
    const path = join(entry.parentPath, entry.name)
    if (!path.includes('/vdis/') || entry.name.startsWith('.')) continue // metadata is written by the main thread
    bytes += (await stat(path)).size
    files++
  }
  return { bytes, files }
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

  it('reports bytes written per remote equal to the bytes on each remote, after a full and a delta', async () => {
    const vm = sim.listVms()[0]!
    await Promise.all(['a', 'b'].map((r) => mkdir(join(dir.path, r))))
    const task = runTask(sim, [vm.uuid], { a: `file://${dir.path}/a`, b: `file://${dir.path}/b` }, { exportRetention: 10 })
    const env = { defaults, exporter: poolExporter(pool), signal: new AbortController().signal }

    const full = await runBackup(task, env)
    expect(full.status, JSON.stringify(full)).toBe('success')
    sim.writeBlocks(vm.uuid, { blocks: 3 })
    const delta = await runBackup(task, env)
    expect(delta.status, JSON.stringify(delta)).toBe('success')

    const text = await (await fetch(`${server.url}/metrics`)).text()
    for (const remote of ['a', 'b']) {
      const onRemote = await diskImageBytes(join(dir.path, remote))
      expect(onRemote.files).toBeGreaterThanOrEqual(4) // 2 disks x (full + delta)
      expect(sampleOf(text, `backup_proxy_bytes_written_total{remote="${remote}"}`)).toBe(onRemote.bytes)
    }
    expect(sampleOf(text, 'backup_proxy_bytes_read_total')).toBeGreaterThan(0)
    expect(sampleOf(text, 'backup_proxy_disk_export_duration_seconds_count')).toBe(4) // 2 disks x 2 runs
    expect(text).not.toMatch(/^backup_proxy_metric_deltas_rejected_total\{/m)
    expect(refused).toEqual([])
  })
})

/**
 * A real Prometheus server (Debian package) scrapes the proxy's /metrics with its bearer token, and its
 * query API returns the proxy's series.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createMetrics, startHttpServer, type HttpServerHandle } from '../../src/metrics/index.js'
import { VERSION } from '../../src/version.js'
import { getFreePort, waitFor } from '../helpers/ports.js'
import { startDaemon, type Daemon } from '../helpers/process.js'
import { makeTempDir } from '../helpers/tmp.js'

interface QueryResult {
  status: string
  data: { result: { metric: Record<string, string>; value: [number, string] }[] }
}

describe('Prometheus scrapes the proxy', () => {
  const metrics = createMetrics()
  const token = 'prom-scrape-token'
  let server: HttpServerHandle
  let prometheus: Daemon
  let promUrl: string
  let tmp: Awaited<ReturnType<typeof makeTempDir>>

  beforeAll(async () => {
    server = await startHttpServer({ listen: '127.0.0.1:0', metrics, isReady: () => Promise.resolve({ ready: true, reasons: [] }), metricsToken: token })
    metrics.record({ metric: 'backup_proxy_bytes_written_total', kind: 'counter', labels: { remote: 'nfs-1' }, value: 4 * 1024 * 1024 })
    metrics.jobFinished('backup.run', 'success', 12)
    tmp = await makeTempDir('bp-prom-')
    const port = await getFreePort()
    promUrl = `http://127.0.0.1:${port}`
    const config = join(tmp.path, 'prometheus.yml')
    await writeFile(
      config,
      [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        'scrape_configs:',
        '  - job_name: backup-proxy',
        '    authorization:',
        `      credentials: ${token}`,
        '    static_configs:',
        `      - targets: ['${new URL(server.url).host}']`,
        '',
      ].join('\n'),
    )
    prometheus = startDaemon('prometheus', [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(tmp.path, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ])
    await waitFor(`prometheus ready: ${prometheus.output()}`, async () => (await fetch(`${promUrl}/-/ready`)).ok, 60_000)
  })

  afterAll(async () => {
    await prometheus?.stop()
    await server?.close()
    await tmp?.remove()
  })

  const query = async (q: string): Promise<QueryResult['data']['result']> => {
    const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`)
    const body = (await res.json()) as QueryResult
    expect(body.status).toBe('success')
    return body.data.result
  }

  it('returns the proxy series through the query API', async () => {
    await waitFor('a first scrape of the proxy', async () => (await query('up{job="backup-proxy"} == 1')).length === 1, 60_000, 250)
    const info = await query('backup_proxy_build_info')
    expect(info).toHaveLength(1)
    expect(info[0]!.metric.version).toBe(VERSION)
    expect(info[0]!.value[1]).toBe('1')
    const written = await query('backup_proxy_bytes_written_total{remote="nfs-1"}')
    expect(written.map((r) => r.value[1])).toEqual([String(4 * 1024 * 1024)])
    const jobs = await query('backup_proxy_jobs_total{kind="backup.run",status="success"}')
    expect(jobs.map((r) => r.value[1])).toEqual(['1'])
    // the scrape went through the token: Prometheus reports no scrape error for the target
    const targets = (await (await fetch(`${promUrl}/api/v1/targets`)).json()) as { data: { activeTargets: { health: string; lastError: string }[] } }
    expect(targets.data.activeTargets.map((t) => [t.health, t.lastError])).toEqual([['up', '']])
  })
})

/**
 * The Grafana dashboard and the Prometheus files of deploy/: every metric a query names is one the
 * proxy's registry exports (the test reads both), every query is valid PromQL (a real Prometheus parses
 * it through its query API), the dashboard covers what operators need, and `promtool` accepts the
 * scrape config and the alerting rules.
 */
import { execFile } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { createMetrics } from '../../src/metrics/index.js'
import { getFreePort, waitFor } from '../helpers/ports.js'
import { startDaemon, type Daemon } from '../helpers/process.js'
import { makeTempDir } from '../helpers/tmp.js'

const run = promisify(execFile)
const root = new URL('../../', import.meta.url)

interface Panel {
  id: number
  type: string
  title: string
  datasource?: { uid: string }
  targets?: { expr: string; datasource?: { uid: string } }[]
  panels?: Panel[]
}
interface Dashboard {
  uid: string
  panels: Panel[]
  templating: { list: { name: string; definition?: string; query?: { query: string } }[] }
}

/** Words of PromQL that are not metric names. */
const PROMQL_WORDS = new Set([
  'sum', 'min', 'max', 'avg', 'count', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'count_values', 'group',
  'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset',
  'rate', 'irate', 'increase', 'delta', 'idelta', 'deriv', 'histogram_quantile', 'vector', 'scalar', 'abs',
  'clamp_min', 'clamp_max', 'time', 'absent', 'changes', 'resets', 'max_over_time', 'min_over_time',
  'avg_over_time', 'label_values', 'label_replace', 'round', 'ceil', 'floor', 'sort', 'sort_desc',
])

/** Substitutes the dashboard's Grafana variables with values Prometheus accepts. */
function substitute(expr: string): string {
  return expr.replaceAll('$__rate_interval', '5m').replaceAll('$__range', '1d').replaceAll('$__interval', '1m').replaceAll('$instance', '.*')
}

/** The metric names an expression reads. */
function metricNamesOf(expr: string): string[] {
  const stripped = substitute(expr)
    .replace(/label_values\(([^,)]+),[^)]*\)/g, '$1') // Grafana's label_values(metric, label)
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '')
    .replace(/\{[^}]*\}/g, '')
  const words = stripped.match(/[A-Za-z_:][A-Za-z0-9_:]*/g) ?? []
  return [...new Set(words.filter((w) => !PROMQL_WORDS.has(w)))]
}

async function exportedNames(): Promise<Set<string>> {
  const metrics = createMetrics()
  const names = new Set<string>(['up']) // `up` is Prometheus's own series for each target
  for (const m of await metrics.registry.getMetricsAsJSON()) {
    names.add(m.name)
    if (String(m.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${m.name}${suffix}`)
  }
  return names
}

async function loadDashboard(): Promise<Dashboard> {
  return JSON.parse(await readFile(new URL('deploy/grafana/dashboards/backup-proxy.json', root), 'utf8')) as Dashboard
}

function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])])
}

function dashboardExprs(dash: Dashboard): string[] {
  const exprs = allPanels(dash.panels).flatMap((p) => (p.targets ?? []).map((t) => t.expr))
  for (const v of dash.templating.list) if (v.query?.query !== undefined) exprs.push(v.query.query)
  return exprs
}

async function alertExprs(): Promise<string[]> {
  const rules = parse(await readFile(new URL('deploy/prometheus/alerts.yml', root), 'utf8')) as { groups: { rules: { expr: string }[] }[] }
  return rules.groups.flatMap((g) => g.rules.map((r) => r.expr))
}

describe('Grafana dashboard and Prometheus files', () => {
  it('the extractor finds metric names (and would catch an unknown one)', () => {
    expect(metricNamesOf('histogram_quantile(0.95, sum by (le, kind) (rate(backup_proxy_job_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))')).toEqual(['backup_proxy_job_duration_seconds_bucket'])
    expect(metricNamesOf('sum(up{job="x"}) / count(backup_proxy_typo_total) or vector(0)')).toEqual(['up', 'backup_proxy_typo_total'])
    expect(metricNamesOf('label_values(backup_proxy_build_info, instance)')).toEqual(['backup_proxy_build_info'])
  })

  it('references only metric names the registry exports', async () => {
    const exported = await exportedNames()
    const dash = await loadDashboard()
    const used = new Set([...dashboardExprs(dash), ...(await alertExprs())].flatMap(metricNamesOf))
    expect(used.size).toBeGreaterThan(10)
    expect([...used].filter((n) => !exported.has(n))).toEqual([])
  })

  it('covers throughput per remote, queue depth, active jobs, outcomes, durations, threads and errors', async () => {
    const dash = await loadDashboard()
    const exprs = dashboardExprs(dash)
    const has = (re: RegExp): boolean => exprs.some((e) => re.test(e))
    expect(has(/sum by \(remote\) \(rate\(backup_proxy_bytes_written_total/)).toBe(true)
    expect(has(/backup_proxy_queue_jobs/)).toBe(true)
    expect(has(/backup_proxy_jobs_active/)).toBe(true)
    expect(has(/by \(kind, status\) \(increase\(backup_proxy_jobs_total/)).toBe(true)
    expect(has(/histogram_quantile\(.*backup_proxy_job_duration_seconds_bucket/)).toBe(true)
    expect(has(/histogram_quantile\(.*backup_proxy_disk_export_duration_seconds_bucket/)).toBe(true)
    expect(has(/backup_proxy_threads_busy.*\/.*backup_proxy_threads\{/)).toBe(true)
    expect(has(/sum by \(code\) \(increase\(backup_proxy_errors_total/)).toBe(true)
    // every panel queries the provisioned datasource; ids are unique
    const panels = allPanels(dash.panels).filter((p) => p.type !== 'row')
    for (const p of panels) expect(p.datasource?.uid, p.title).toBe('${datasource}')
    // the datasource is a variable (defaulting to the provisioned one), not hard-coded
    const variables = (dash as unknown as { templating: { list: { name: string; type: string; query: string }[] } }).templating.list
    expect(variables.find((v) => v.name === 'datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' })
    // a "last runs" table per backup job and schedule, and the jobs without success in 26 h
    expect(panels.find((p) => p.title === 'Last runs')?.targets?.some((t) => /backup_proxy_backup_last_success_timestamp_seconds/.test(t.expr))).toBe(true)
    expect(has(/> 93600/)).toBe(true)
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length)
    expect(dash.uid).toBe('backup-proxy')
  })

  it('promtool accepts the scrape config and the alerting rules', async () => {
    const config = await run('promtool', ['check', 'config', 'deploy/prometheus/prometheus.yml'], { cwd: root.pathname })
    expect(config.stdout).toMatch(/SUCCESS: .*prometheus\.yml is valid/)
    const rules = await run('promtool', ['check', 'rules', 'deploy/prometheus/alerts.yml'], { cwd: root.pathname })
    expect(rules.stdout).toMatch(/SUCCESS: \d+ rules found/)
  })

  describe('with a real Prometheus', () => {
    let prometheus: Daemon
    let url: string
    let tmp: Awaited<ReturnType<typeof makeTempDir>>

    beforeAll(async () => {
      tmp = await makeTempDir('bp-prom-dash-')
      const port = await getFreePort()
      url = `http://127.0.0.1:${port}`
      const config = join(tmp.path, 'prometheus.yml')
      await writeFile(config, 'global:\n  scrape_interval: 1m\nscrape_configs: []\n')
      prometheus = startDaemon('prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${join(tmp.path, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'])
      await waitFor(`prometheus ready: ${prometheus.output()}`, async () => (await fetch(`${url}/-/ready`)).ok, 60_000)
    })

    afterAll(async () => {
      await prometheus?.stop()
      await tmp?.remove()
    })

    it('parses every dashboard and alert query', async () => {
      const dash = await loadDashboard()
      const exprs = [...dashboardExprs(dash).filter((e) => !e.startsWith('label_values(')), ...(await alertExprs())]
      const failures: string[] = []
      for (const expr of exprs) {
        const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(substitute(expr))}`)
        const body = (await res.json()) as { status: string; error?: string }
        if (body.status !== 'success') failures.push(`${expr}: ${body.error ?? res.status}`)
      }
      expect(failures).toEqual([])
      // and it does reject bad PromQL
      const bad = (await (await fetch(`${url}/api/v1/query?query=${encodeURIComponent('sum by (remote (rate(x[5m]))')}`)).json()) as { status: string }
      expect(bad.status).toBe('error')
    })
  })
})

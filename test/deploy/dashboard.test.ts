/**
 * The Grafana dashboard and the Prometheus files of deploy/: every metric a query names is one the
 * proxy's registry exports (the test reads both), every query is valid PromQL (a real Prometheus parses
 * it through its query API), the dashboard covers what operators need, and `promtool` accepts the
 * scrape config and the alerting rules; the alerts that answer "did last night's backups work"
 * (BackupJobNoSuccess26h, BackupRunPartial) read the catalogue's per-job metrics by their labels and fire
 * (or stay silent) on synthetic series under `promtool test rules`.
 */
import { execFile } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { metricSpec } from '../../src/metrics/catalogue.js'
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

interface AlertRule { alert: string; expr: string; labels?: Record<string, string> }

async function alertRules(): Promise<AlertRule[]> {
  const rules = parse(await readFile(new URL('deploy/prometheus/alerts.yml', root), 'utf8')) as { groups: { rules: AlertRule[] }[] }
  return rules.groups.flatMap((g) => g.rules)
}

async function alertExprs(): Promise<string[]> {
  return (await alertRules()).map((r) => r.expr)
}

/** promtool's unit test of the two per-job alerts: 1h steps from time 0 (time() is the step's Unix time). */
const RULES_TEST = (rulesFile: string): string => `rule_files: ['${rulesFile}']
evaluation_interval: 1h
tests:
  - interval: 1h
    input_series:
      # last success at time 0 (stale from 26 h on); fresh succeeds every hour
      - series: 'backup_proxy_backup_last_success_timestamp_seconds{job="stale", schedule="s1"}'
        values: '0x30'
      - series: 'backup_proxy_backup_last_success_timestamp_seconds{job="fresh", schedule="s1"}'
        values: '0+3600x30'
      # one partial run between 2 h and 3 h; clean only succeeds
      - series: 'backup_proxy_backup_runs_total{job="flaky", schedule="s1", status="partial"}'
        values: '0 0 0 1x27'
      - series: 'backup_proxy_backup_runs_total{job="clean", schedule="s1", status="success"}'
        values: '0+1x30'
    alert_rule_test:
      - { eval_time: 25h, alertname: BackupJobNoSuccess26h, exp_alerts: [] }
      - eval_time: 27h
        alertname: BackupJobNoSuccess26h
        exp_alerts:
          - exp_labels: { severity: critical, job: stale, schedule: s1 }
            exp_annotations:
              summary: 'backup job stale (schedule s1) has not succeeded for 26 hours'
              description: 'Its last successful run ended 1d 3h 0m 0s ago. Look at its last runs: backup-proxy jobs --job stale, then backup-proxy job show <id>.'
      - { eval_time: 2h, alertname: BackupRunPartial, exp_alerts: [] }
      - eval_time: 4h
        alertname: BackupRunPartial
        exp_alerts:
          - exp_labels: { severity: warning, job: flaky, schedule: s1 }
            exp_annotations:
              summary: 'backup job flaky (schedule s1) had a partial run in the last day'
              description: 'Some VMs or remotes of the run failed while others were backed up; the next run retries them. See backup-proxy jobs --job flaky --state failure.'
`

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

  it('BackupJobNoSuccess26h and BackupRunPartial read the per-job metrics the proxy exports, and fire as promtool test rules expects', async () => {
    const rules = await alertRules()
    const expected = { BackupJobNoSuccess26h: 'backup_proxy_backup_last_success_timestamp_seconds', BackupRunPartial: 'backup_proxy_backup_runs_total' }
    for (const [alert, metric] of Object.entries(expected)) {
      const rule = rules.find((r) => r.alert === alert)
      expect(rule, alert).toBeDefined()
      expect(metricNamesOf(rule!.expr)).toEqual([metric])
      // grouped by the labels the catalogue gives the metric (one alert per backup job and schedule)
      expect(metricSpec(metric)?.labelNames).toEqual(expect.arrayContaining(['job', 'schedule']))
      expect(rule!.expr).toMatch(/by \(job, schedule\)/)
    }
    expect(rules.find((r) => r.alert === 'BackupRunPartial')!.expr).toContain('status="partial"')
    const tmp = await makeTempDir('bp-prom-rules-')
    try {
      const file = join(tmp.path, 'alerts.test.yml')
      await writeFile(file, RULES_TEST(new URL('deploy/prometheus/alerts.yml', root).pathname))
      const result = await run('promtool', ['test', 'rules', file]).catch((error: { stdout?: string; stderr?: string }) => ({ stdout: `${error.stdout ?? ''}${error.stderr ?? ''}`, failed: true }))
      expect(result.stdout).toContain('SUCCESS')
      expect('failed' in result, result.stdout).toBe(false)
    } finally {
      await tmp.remove()
    }
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

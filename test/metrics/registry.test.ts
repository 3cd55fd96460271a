import { describe, expect, it } from 'vitest'
import { METRIC_SPECS, applyMetricDeltas, createMetrics, metricNames } from '../../src/metrics/index.js'
import { VERSION } from '../../src/version.js'
import { promtoolCheckMetrics } from './promtool.js'

/** One sample value for every catalogue metric, so each appears with its labels in the output. */
function populate(metrics: ReturnType<typeof createMetrics>): void {
  for (const spec of METRIC_SPECS) {
    if (spec.name === 'backup_proxy_build_info') continue
    const labels = Object.fromEntries(spec.labelNames.map((n) => [n, n === 'remote' ? 'r1' : n === 'code' ? 'E_XAPI' : n === 'queue' ? '{proxy.a}' : 'x']))
    const rejection = spec.kind === 'gauge' ? metrics.setGauge(spec.name, labels, 2) : metrics.record({ metric: spec.name, kind: spec.kind, labels, value: 1.5 })
    expect(rejection).toBeUndefined()
  }
}

describe('metrics registry', () => {
  it('exports every catalogue metric, build info and default process metrics; promtool check metrics passes', async () => {
    const metrics = createMetrics()
    populate(metrics)
    const text = await metrics.text()
    for (const name of metricNames()) expect(text).toContain(`# TYPE ${name} `)
    expect(text).toContain(`backup_proxy_build_info{version="${VERSION}"} 1`)
    expect(text).toContain('# TYPE process_cpu_seconds_total counter')
    expect(text).toContain('# TYPE nodejs_eventloop_lag_seconds gauge')
    const { code, output } = await promtoolCheckMetrics(text)
    expect(output).toBe('')
    expect(code).toBe(0)
  })

  it('promtool rejects a badly named metric (the check can fail)', async () => {
    const { code, output } = await promtoolCheckMetrics('# HELP bad_counter x\n# TYPE bad_counter counter\nbad_counter 1\n')
    expect(code).not.toBe(0)
    expect(output).toMatch(/_total/)
  })

  it('keeps registries of two proxies apart', async () => {
    const a = createMetrics({ defaultMetrics: false })
    const b = createMetrics({ defaultMetrics: false, version: '9.9.9' })
    a.countError('E_XAPI')
    expect(await a.text()).toContain('backup_proxy_errors_total{code="E_XAPI"} 1')
    expect(await b.text()).not.toContain('code="E_XAPI"')
    expect(await b.text()).toContain('backup_proxy_build_info{version="9.9.9"} 1')
  })

  it('refuses unbounded or secret label values and counts the refusals', async () => {
    const metrics = createMetrics({ defaultMetrics: false })
    const bad = [
      { labels: { remote: 's3://AK:SECRET@host/bucket' }, why: /no URL/ },
      { labels: { remote: 'a b' }, why: /no URL, path or spaces/ },
      { labels: { remote: 'x'.repeat(161) }, why: /longer than 160/ },
      { labels: { remote: '' }, why: /empty/ },
      { labels: {}, why: /takes labels \[remote\]/ },
      { labels: { remote: 'r1', vm: 'v' }, why: /takes labels/ },
    ]
    for (const { labels, why } of bad) {
      const r = metrics.record({ metric: 'backup_proxy_bytes_written_total', kind: 'counter', labels, value: 1 })
      expect(r?.reason).toBe('bad_labels')
      expect(r?.message).toMatch(why)
    }
    const uuid = '0f3c2a4e-8f1b-4c55-9a0e-2b7d6c1e9f00'
    expect(metrics.record({ metric: 'backup_proxy_errors_total', kind: 'counter', labels: { code: uuid }, value: 1 })?.message).toMatch(/uuid/)
    // a remote id may be XO's remote uuid
    expect(metrics.record({ metric: 'backup_proxy_bytes_written_total', kind: 'counter', labels: { remote: uuid }, value: 10 })).toBeUndefined()
    expect(metrics.record({ metric: 'backup_proxy_nope_total', kind: 'counter', labels: {}, value: 1 })?.reason).toBe('unknown_metric')
    expect(metrics.record({ metric: 'backup_proxy_jobs_active', kind: 'counter', labels: {}, value: 1 })?.reason).toBe('wrong_kind')
    expect(metrics.record({ metric: 'backup_proxy_bytes_read_total', kind: 'counter', labels: {}, value: -1 })?.reason).toBe('bad_value')
    expect(metrics.record({ metric: 'backup_proxy_bytes_read_total', kind: 'counter', labels: {}, value: Number.NaN })?.reason).toBe('bad_value')
    const text = await metrics.text()
    expect(text).toContain('backup_proxy_metric_deltas_rejected_total{reason="bad_labels"} 7')
    expect(text).toContain('backup_proxy_metric_deltas_rejected_total{reason="unknown_metric"} 1')
    expect(text).toContain('backup_proxy_metric_deltas_rejected_total{reason="wrong_kind"} 1')
    expect(text).toContain('backup_proxy_metric_deltas_rejected_total{reason="bad_value"} 2')
    expect(text).toContain(`backup_proxy_bytes_written_total{remote="${uuid}"} 10`)
    expect(text).not.toContain('SECRET')
  })

  it('applyMetricDeltas applies valid deltas once and refuses main-thread metrics and malformed ones', async () => {
    const metrics = createMetrics({ defaultMetrics: false })
    const result = applyMetricDeltas(metrics, [
      { metric: 'backup_proxy_bytes_read_total', kind: 'counter', labels: {}, value: 100 },
      { metric: 'backup_proxy_bytes_read_total', kind: 'counter', labels: {}, value: 23 },
      { metric: 'backup_proxy_disk_export_duration_seconds', kind: 'histogram', labels: {}, value: 3 },
      { metric: 'backup_proxy_jobs_total', kind: 'counter', labels: { kind: 'backup.run', status: 'success' }, value: 1 },
      { metric: 'backup_proxy_bytes_read_total', kind: 'counter', labels: {}, value: '5' },
      null,
    ])
    expect(result.applied).toBe(3)
    expect(result.rejected.map((r) => r.rejection.reason)).toEqual(['not_from_threads', 'bad_value', 'bad_value'])
    expect(applyMetricDeltas(metrics, 'nope').rejected).toHaveLength(1)
    const text = await metrics.text()
    expect(text).toContain('backup_proxy_bytes_read_total 123')
    expect(text).toContain('backup_proxy_disk_export_duration_seconds_count 1')
    expect(text).toContain('backup_proxy_disk_export_duration_seconds_sum 3')
    expect(text).not.toMatch(/backup_proxy_jobs_total\{/)
  })
})

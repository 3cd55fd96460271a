/**
 * Per-job metrics: the outcome a finished job is counted under (cancelled and partial apart from
 * interrupted and failure), one series per backup job and schedule for runs and last success/run
 * times, job and schedule ids that are XO uuids accepted as labels, and promtool accepting the result.
 */
import { describe, expect, it } from 'vitest'
import { createMetrics } from '../../src/metrics/index.js'
import { jobOutcome } from '../../src/metrics/job-outcome.js'
import { metricsHooks } from '../../src/metrics/proxy-observability.js'
import { promtoolCheckMetrics } from './promtool.js'

const JOB = '6f1b3c1e-2d4a-4b7e-9c1f-0a2b3c4d5e6f'
const data = { v: 1, task: { kind: 'backup.run', job: { id: JOB }, schedule: { id: 'nightly' } } }

describe('job outcome metrics', () => {
  it('tells cancelled from interrupted and partial from failure', () => {
    expect(jobOutcome('backup.run', 'interrupted', { error: { code: 'E_CANCELLED' } }, data).status).toBe('cancelled')
    expect(jobOutcome('backup.run', 'interrupted', { error: { code: 'E_TIMEOUT' } }, data).status).toBe('interrupted')
    expect(jobOutcome('backup.run', 'failure', { result: { vms: 3, succeeded: 2 } }, data)).toEqual({ status: 'partial', backup: { job: JOB, schedule: 'nightly' } })
    expect(jobOutcome('backup.run', 'failure', { result: { vms: 3, succeeded: 0 } }, data).status).toBe('failure')
    expect(jobOutcome('backup.run', 'failure', undefined, data).status).toBe('failure')
    expect(jobOutcome('remote.test', 'success', {}, { v: 1, task: { kind: 'remote.test' } })).toEqual({ status: 'success' })
  })

  it('keeps one series per backup job and schedule: runs by outcome, last run and last success times', async () => {
    const metrics = createMetrics()
    const warnings: unknown[] = []
    const hooks = metricsHooks(metrics, { warn: (...a: unknown[]) => void warnings.push(a) })
    for (const status of ['success', 'partial', 'success', 'cancelled']) hooks.onJobEnd({ kind: 'backup.run', status, durationSeconds: 1, backup: { job: JOB, schedule: 'nightly' } })
    metrics.jobFinished('backup.run', 'success', 1, { job: JOB, schedule: 'weekly' }, 1_700_000_000_000)
    metrics.jobFinished('backup.run', 'failure', 1, { job: JOB, schedule: 'weekly' }, 1_700_000_100_000)
    const text = await metrics.text()
    expect(text).toContain(`backup_proxy_backup_runs_total{job="${JOB}",schedule="nightly",status="success"} 2`)
    expect(text).toContain(`backup_proxy_backup_runs_total{job="${JOB}",schedule="nightly",status="partial"} 1`)
    expect(text).toContain('backup_proxy_jobs_total{kind="backup.run",status="cancelled"} 1')
    expect(text).toContain(`backup_proxy_backup_last_success_timestamp_seconds{job="${JOB}",schedule="weekly"} 1700000000`)
    expect(text).toContain(`backup_proxy_backup_last_run_timestamp_seconds{job="${JOB}",schedule="weekly"} 1700000100`)
    expect(text.match(/^backup_proxy_backup_last_success_timestamp_seconds\{/gm)).toHaveLength(2)
    expect(text).not.toContain('backup_proxy_metric_deltas_rejected_total{')
    expect(warnings).toEqual([])
    const check = await promtoolCheckMetrics(text)
    expect(check.code, check.output).toBe(0)
  })
})

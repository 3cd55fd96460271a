/**
 * The catalogue of every metric backup-proxy exports: name, type, help, label names and buckets, in one
 * table. The registry (registry.ts) is built from it, thread deltas (deltas.ts) are validated against
 * it, and the dashboard test reads it, so a metric cannot exist in one place and not the others.
 *
 * Naming follows Prometheus conventions: `backup_proxy_` prefix, base units in the name (`_bytes`,
 * `_seconds`), counters end in `_total`, nothing else does.
 *
 * Labels are bounded: a label value is never a VM uuid, a job id, a path or a URL (which could carry
 * credentials). `validateLabelValue` enforces that for every value that reaches the registry through
 * `record`/`applyMetricDeltas`; the labels that may hold a uuid are `remote`, `job` and `schedule`,
 * because XO names its remotes, backup jobs and schedules by uuid and a proxy has a handful of each
 * (configured objects, never one per run or per VM).
 */

export type MetricKind = 'counter' | 'histogram' | 'gauge'

export interface MetricSpec {
  name: string
  kind: MetricKind
  help: string
  labelNames: readonly string[]
  /** histogram buckets, in the metric's base unit */
  buckets?: readonly number[]
  /** whether worker threads may send deltas for it (gauges that the main thread computes may not) */
  fromThreads: boolean
}

const JOB_DURATION_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14_400, 28_800, 86_400] as const
const DISK_EXPORT_BUCKETS = [0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14_400, 43_200] as const
const REMOTE_OP_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300] as const

/** Every backup-proxy metric (default process metrics from prom-client come on top). */
export const METRIC_SPECS = [
  // --- data path
  { name: 'backup_proxy_bytes_read_total', kind: 'counter', labelNames: [], fromThreads: true, help: 'Bytes read from XAPI disk exports (the backup source).' },
  { name: 'backup_proxy_bytes_written_total', kind: 'counter', labelNames: ['remote'], fromThreads: true, help: 'Bytes written to each remote (payload bytes accepted by the remote).' },
  { name: 'backup_proxy_remote_bytes_read_total', kind: 'counter', labelNames: ['remote'], fromThreads: true, help: 'Bytes read back from each remote (restore, verify, merge, remote test).' },
  { name: 'backup_proxy_disk_export_duration_seconds', kind: 'histogram', labelNames: [], buckets: DISK_EXPORT_BUCKETS, fromThreads: true, help: 'Duration of one disk export, from the first byte requested to the last byte published on every remote.' },
  // --- jobs
  { name: 'backup_proxy_jobs_total', kind: 'counter', labelNames: ['kind', 'status'], fromThreads: false, help: 'Jobs finished, by task kind and outcome: success, partial (a backup run where some VMs or remotes failed), failure, cancelled, interrupted (timeout, shutdown), skipped, requeued.' },
  { name: 'backup_proxy_backup_runs_total', kind: 'counter', labelNames: ['job', 'schedule', 'status'], fromThreads: false, help: 'Backup runs finished, by backup job id, schedule id and outcome (as jobs_total): one series per configured job and schedule.' },
  { name: 'backup_proxy_backup_last_run_timestamp_seconds', kind: 'gauge', labelNames: ['job', 'schedule'], fromThreads: false, help: 'When the last run of each backup job and schedule ended (Unix time), whatever its outcome.' },
  { name: 'backup_proxy_backup_last_success_timestamp_seconds', kind: 'gauge', labelNames: ['job', 'schedule'], fromThreads: false, help: 'When the last successful run of each backup job and schedule ended (Unix time): alert when it is too old.' },
  { name: 'backup_proxy_job_duration_seconds', kind: 'histogram', labelNames: ['kind'], buckets: JOB_DURATION_BUCKETS, fromThreads: false, help: 'Duration of finished jobs, by task kind.' },
  { name: 'backup_proxy_jobs_active', kind: 'gauge', labelNames: [], fromThreads: false, help: 'Jobs running on this proxy now.' },
  { name: 'backup_proxy_retries_total', kind: 'counter', labelNames: ['reason'], fromThreads: true, help: 'Retries (of a job attempt, a VM, a request), by reason.' },
  { name: 'backup_proxy_errors_total', kind: 'counter', labelNames: ['code'], fromThreads: true, help: 'Errors that failed an operation (a job, a VM, a disk, a remote target), by stable error code.' },
  // --- threads and queues
  { name: 'backup_proxy_threads_busy', kind: 'gauge', labelNames: [], fromThreads: false, help: 'Disk streams running in the stream threads now.' },
  { name: 'backup_proxy_threads', kind: 'gauge', labelNames: [], fromThreads: false, help: 'Disk streams the pool runs at once, workers.threads (the utilisation is threads_busy / threads).' },
  { name: 'backup_proxy_queue_jobs', kind: 'gauge', labelNames: ['queue', 'state'], fromThreads: false, help: 'Jobs in each served BullMQ queue by state, read from Redis at scrape time.' },
  { name: 'backup_proxy_queue_scrape_errors_total', kind: 'counter', labelNames: ['queue'], fromThreads: false, help: 'Scrapes where the job counts of a queue could not be read from Redis.' },
  // --- remotes
  { name: 'backup_proxy_remote_up', kind: 'gauge', labelNames: ['remote'], fromThreads: false, help: '1 when the last operation on the remote reached it, 0 when it failed to (connection, I/O, permission).' },
  { name: 'backup_proxy_remote_operations_total', kind: 'counter', labelNames: ['remote', 'op', 'status'], fromThreads: true, help: 'Remote operations, by remote, operation and status (ok, error).' },
  { name: 'backup_proxy_remote_operation_duration_seconds', kind: 'histogram', labelNames: ['remote', 'op'], buckets: REMOTE_OP_BUCKETS, fromThreads: true, help: 'Duration of remote operations.' },
  // --- self
  { name: 'backup_proxy_build_info', kind: 'gauge', labelNames: ['version'], fromThreads: false, help: 'Always 1; the version label tells which backup-proxy runs.' },
  { name: 'backup_proxy_metric_deltas_rejected_total', kind: 'counter', labelNames: ['reason'], fromThreads: false, help: 'Metric deltas refused by the main thread (unknown metric, bad labels or value): a bug to report.' },
] as const satisfies readonly MetricSpec[]

export type MetricName = (typeof METRIC_SPECS)[number]['name']

const SPEC_BY_NAME: ReadonlyMap<string, MetricSpec> = new Map(METRIC_SPECS.map((s) => [s.name, s]))

export function metricSpec(name: string): MetricSpec | undefined {
  return SPEC_BY_NAME.get(name)
}

/** The names of every metric in the catalogue. */
export function metricNames(): MetricName[] {
  return METRIC_SPECS.map((s) => s.name)
}

/** Labels whose values are XO object ids (uuids) of configured objects: bounded. */
const UUID_LABELS = new Set(['remote', 'job', 'schedule'])
const UUID_RE = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i
const MAX_LABEL_LENGTH = 160
const LABEL_VALUE_RE = /^[A-Za-z0-9_.:{}-]+$/

/**
 * Why a label value is refused, or undefined when it is acceptable. Values are short identifiers
 * (`[A-Za-z0-9_.:{}-]`, 1-160 characters: ids are up to 128, queue names wrap them in `{proxy.…}`): no `/`, `@` or spaces, so neither a path nor a URL (with or
 * without credentials) fits; a uuid is refused except in the `remote` label.
 */
export function validateLabelValue(label: string, value: unknown): string | undefined {
  if (typeof value !== 'string') return `label "${label}" must be a string, got ${typeof value}`
  if (value === '') return `label "${label}" must not be empty`
  if (value.length > MAX_LABEL_LENGTH) return `label "${label}" is longer than ${MAX_LABEL_LENGTH} characters`
  if (!LABEL_VALUE_RE.test(value)) return `label "${label}" must be letters, digits and _ . : { } - (no URL, path or spaces)`
  if (!UUID_LABELS.has(label) && UUID_RE.test(value)) return `label "${label}" must not hold a uuid (VM or job ids make unbounded series)`
  return undefined
}

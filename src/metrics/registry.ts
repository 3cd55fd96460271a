/**
 * The metrics registry of one proxy process, owned by the main thread.
 *
 * `createMetrics()` builds a prom-client Registry holding every metric of the catalogue
 * (catalogue.ts), `backup_proxy_build_info{version}` set to 1, and prom-client's default process and
 * Node.js metrics (unprefixed, as every Node dashboard expects them). Each proxy gets its own registry
 * (never prom-client's global one), so tests and several proxies in one process do not mix.
 *
 * Writes go through `record()`, which validates the metric name, kind, label names and label values
 * (bounded: see `validateLabelValue`) and refuses what does not fit: a refused write increments
 * `backup_proxy_metric_deltas_rejected_total{reason}` and returns the reason, so a bad label is visible
 * on the dashboard but never fails a backup. Worker threads do not touch this object: they send deltas
 * that `applyMetricDeltas` (deltas.ts) feeds to `record()`.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client'
import { VERSION } from '../version.js'
import { METRIC_SPECS, metricSpec, validateLabelValue, type MetricKind, type MetricName, type MetricSpec } from './catalogue.js'

type Labels = Record<string, string>

interface CreateMetricsOptions {
  /** value of `backup_proxy_build_info{version}`; default: package.json's version */
  version?: string
  /** register prom-client's default process/Node.js metrics; default true */
  defaultMetrics?: boolean
}

/** One write to a metric: counter increment, histogram observation, or gauge increment (may be < 0). */
interface MetricWrite {
  metric: string
  kind: MetricKind
  labels: Labels
  value: number
}

type RejectReason = 'unknown_metric' | 'wrong_kind' | 'not_from_threads' | 'bad_labels' | 'bad_value'

export interface Rejection {
  reason: RejectReason
  message: string
}

const MISNAMED_DEFAULT_METRICS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'] as const

type AnyMetric = Counter<string> | Gauge<string> | Histogram<string>

export class ProxyMetrics {
  readonly registry: Registry
  readonly version: string
  readonly #metrics = new Map<string, AnyMetric>()
  readonly #collectHooks = new Map<string, Set<() => Promise<void>>>()

  constructor(options: CreateMetricsOptions = {}) {
    this.registry = new Registry()
    this.version = options.version ?? VERSION
    for (const spec of METRIC_SPECS) this.#metrics.set(spec.name, this.#create(spec))
    this.gauge('backup_proxy_build_info').set({ version: this.version }, 1)
    if (options.defaultMetrics !== false) {
      collectDefaultMetrics({ register: this.registry })
      // prom-client names these gauges with a `_total` suffix, which Prometheus reserves for counters
      // (`promtool check metrics` flags them); they say little about a backup proxy, so they are dropped
      for (const name of MISNAMED_DEFAULT_METRICS) this.registry.removeSingleMetric(name)
    }
  }

  #create(spec: MetricSpec): AnyMetric {
    const common = { name: spec.name, help: spec.help, labelNames: [...spec.labelNames], registers: [this.registry] }
    switch (spec.kind) {
      case 'counter':
        return new Counter(common)
      case 'gauge':
        // gauges read at scrape time (queue counts) are filled by hooks registered with onCollect()
        return new Gauge({ ...common, collect: () => this.#runCollectHooks(spec.name) })
      case 'histogram':
        return new Histogram({ ...common, buckets: [...(spec.buckets ?? [])] })
    }
  }

  async #runCollectHooks(name: string): Promise<void> {
    const hooks = this.#collectHooks.get(name)
    if (hooks === undefined || hooks.size === 0) return
    await Promise.all([...hooks].map((hook) => hook()))
  }

  /**
   * Registers a function run at each scrape before `name` (a gauge) is read; it must not throw (report
   * its own failures) and should bound its own duration. Returns a function that unregisters it.
   */
  onCollect(name: MetricName, hook: () => Promise<void>): () => void {
    this.gauge(name)
    let hooks = this.#collectHooks.get(name)
    if (hooks === undefined) this.#collectHooks.set(name, (hooks = new Set()))
    hooks.add(hook)
    return () => {
      hooks.delete(hook)
    }
  }

  #get(name: MetricName, kind: MetricKind): Metric<string> {
    const metric = this.#metrics.get(name)
    const spec = metricSpec(name)
    if (metric === undefined || spec?.kind !== kind) throw new TypeError(`metric ${name} is not a ${kind}`)
    return metric
  }

  /** The prom-client object of a catalogue counter (for reads in tests and collectors). */
  counter(name: MetricName): Counter<string> {
    return this.#get(name, 'counter') as Counter<string>
  }

  gauge(name: MetricName): Gauge<string> {
    return this.#get(name, 'gauge') as Gauge<string>
  }

  histogram(name: MetricName): Histogram<string> {
    return this.#get(name, 'histogram') as Histogram<string>
  }

  /**
   * Validates and applies one write. Returns undefined when applied, else why it was refused (and
   * counts the refusal in `backup_proxy_metric_deltas_rejected_total`).
   */
  record(write: MetricWrite, options: { fromThread?: boolean } = {}): Rejection | undefined {
    const rejection = checkWrite(write, options.fromThread === true)
    if (rejection !== undefined) {
      this.counter('backup_proxy_metric_deltas_rejected_total').inc({ reason: rejection.reason })
      return rejection
    }
    const metric = this.#metrics.get(write.metric)
    if (metric instanceof Counter) metric.inc(write.labels, write.value)
    else if (metric instanceof Gauge) metric.inc(write.labels, write.value)
    else if (metric instanceof Histogram) metric.observe(write.labels, write.value)
    return undefined
  }

  /** Sets a gauge to an absolute value (main thread only), with the same label checks as record(). */
  setGauge(name: MetricName, labels: Labels, value: number): Rejection | undefined {
    const rejection = checkWrite({ metric: name, kind: 'gauge', labels, value }, false)
    if (rejection !== undefined) {
      this.counter('backup_proxy_metric_deltas_rejected_total').inc({ reason: rejection.reason })
      return rejection
    }
    this.gauge(name).set(labels, value)
    return undefined
  }

  /**
   * A finished job: counts it and observes its duration; a backup run (`backup` names its job and
   * schedule) also counts in backup_runs_total and sets the last-run and last-success times.
   */
  jobFinished(kind: string, status: string, durationSeconds: number, backup?: { job: string; schedule: string }, nowMs = Date.now()): void {
    this.record({ metric: 'backup_proxy_jobs_total', kind: 'counter', labels: { kind, status }, value: 1 })
    this.record({ metric: 'backup_proxy_job_duration_seconds', kind: 'histogram', labels: { kind }, value: durationSeconds })
    if (backup === undefined || status === 'requeued') return
    const labels = { job: backup.job, schedule: backup.schedule }
    this.record({ metric: 'backup_proxy_backup_runs_total', kind: 'counter', labels: { ...labels, status }, value: 1 })
    this.setGauge('backup_proxy_backup_last_run_timestamp_seconds', labels, nowMs / 1000)
    if (status === 'success') this.setGauge('backup_proxy_backup_last_success_timestamp_seconds', labels, nowMs / 1000)
  }

  /** Counts an error that failed an operation, by its stable code (`E_XAPI`, `ENOENT`, ...). */
  countError(code: string): void {
    this.record({ metric: 'backup_proxy_errors_total', kind: 'counter', labels: { code }, value: 1 })
  }

  countRetry(reason: string): void {
    this.record({ metric: 'backup_proxy_retries_total', kind: 'counter', labels: { reason }, value: 1 })
  }

  setJobsActive(count: number): void {
    this.setGauge('backup_proxy_jobs_active', {}, count)
  }

  setThreads(busy: number, total: number): void {
    this.setGauge('backup_proxy_threads_busy', {}, busy)
    this.setGauge('backup_proxy_threads', {}, total)
  }

  /** The exposition text of every metric (what GET /metrics returns). */
  async text(): Promise<string> {
    return this.registry.metrics()
  }

  get contentType(): string {
    return this.registry.contentType
  }
}

function checkWrite(write: MetricWrite, fromThread: boolean): Rejection | undefined {
  const spec = metricSpec(write.metric)
  if (spec === undefined) return { reason: 'unknown_metric', message: `unknown metric "${String(write.metric)}"` }
  if (spec.kind !== write.kind) return { reason: 'wrong_kind', message: `${spec.name} is a ${spec.kind}, not a ${String(write.kind)}` }
  if (fromThread && !spec.fromThreads) return { reason: 'not_from_threads', message: `${spec.name} is computed by the main thread; threads may not send deltas for it` }
  if (typeof write.labels !== 'object' || write.labels === null) return { reason: 'bad_labels', message: `${spec.name}: labels must be an object` }
  const names = Object.keys(write.labels)
  const expected = spec.labelNames
  if (names.length !== expected.length || !expected.every((n) => Object.hasOwn(write.labels, n))) {
    return { reason: 'bad_labels', message: `${spec.name} takes labels [${expected.join(', ')}], got [${names.join(', ')}]` }
  }
  for (const name of expected) {
    const problem = validateLabelValue(name, write.labels[name])
    if (problem !== undefined) return { reason: 'bad_labels', message: `${spec.name}: ${problem}` }
  }
  const v = write.value
  if (typeof v !== 'number' || !Number.isFinite(v)) return { reason: 'bad_value', message: `${spec.name}: value must be a finite number` }
  if (spec.kind !== 'gauge' && v < 0) return { reason: 'bad_value', message: `${spec.name}: a ${spec.kind} value cannot be negative (${v})` }
  return undefined
}

/** Builds the registry of one proxy process. */
export function createMetrics(options: CreateMetricsOptions = {}): ProxyMetrics {
  return new ProxyMetrics(options)
}

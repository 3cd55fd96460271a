/**
 * Metric deltas: how worker threads report metrics without owning a registry.
 *
 * A thread never holds prom-client state (a registry per thread would be scraped nowhere, and summing
 * absolute values from several threads double counts). Instead it sends, over its MessagePort,
 * `{ type: 'metrics', deltas: MetricDelta[] }` where each delta is a counter increment, one histogram
 * observation, or a gauge increment since its previous message (thread-recorder.ts batches them). The
 * main thread hands the array to `applyMetricDeltas`, which validates every delta (the message crossed
 * a thread boundary: its shape is checked, not trusted) and applies each valid one exactly once.
 */
import type { MetricKind } from './catalogue.js'
import type { ProxyMetrics, Rejection } from './registry.js'

export interface MetricDelta {
  metric: string
  kind: MetricKind
  labels: Record<string, string>
  /** counter: increment (>= 0); histogram: one observation; gauge: increment (may be < 0) */
  value: number
}

/** The message a thread posts on its port; src/workers/messages.ts includes it in its union. */
export interface MetricsMessage {
  type: 'metrics'
  deltas: MetricDelta[]
}

interface ApplyResult {
  applied: number
  rejected: { delta: unknown; rejection: Rejection }[]
}

const KINDS: ReadonlySet<string> = new Set(['counter', 'histogram', 'gauge'])

function isDelta(value: unknown): value is MetricDelta {
  if (typeof value !== 'object' || value === null) return false
  const d = value as Record<string, unknown>
  return (
    typeof d.metric === 'string' &&
    typeof d.kind === 'string' &&
    KINDS.has(d.kind) &&
    typeof d.labels === 'object' &&
    d.labels !== null &&
    !Array.isArray(d.labels) &&
    typeof d.value === 'number'
  )
}

/**
 * Applies deltas received from a thread. Invalid ones are skipped, counted in
 * `backup_proxy_metric_deltas_rejected_total{reason}` and returned so the caller can log them.
 */
export function applyMetricDeltas(metrics: ProxyMetrics, deltas: unknown): ApplyResult {
  const result: ApplyResult = { applied: 0, rejected: [] }
  if (!Array.isArray(deltas)) {
    const rejection: Rejection = { reason: 'bad_value', message: 'metric deltas must be an array' }
    metrics.counter('backup_proxy_metric_deltas_rejected_total').inc({ reason: rejection.reason })
    result.rejected.push({ delta: deltas, rejection })
    return result
  }
  for (const delta of deltas as unknown[]) {
    if (!isDelta(delta)) {
      const rejection: Rejection = { reason: 'bad_value', message: 'a metric delta must be { metric: string, kind: counter|histogram|gauge, labels: object, value: number }' }
      metrics.counter('backup_proxy_metric_deltas_rejected_total').inc({ reason: rejection.reason })
      result.rejected.push({ delta, rejection })
      continue
    }
    const rejection = metrics.record(delta, { fromThread: true })
    if (rejection === undefined) result.applied++
    else result.rejected.push({ delta, rejection })
  }
  return result
}

/** Whether a message received on a thread port is a metrics message. */
export function isMetricsMessage(message: unknown): message is MetricsMessage {
  return typeof message === 'object' && message !== null && (message as { type?: unknown }).type === 'metrics' && Array.isArray((message as { deltas?: unknown }).deltas)
}

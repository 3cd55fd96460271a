/**
 * Metrics and HTTP endpoints of a proxy: the registry (main thread), thread deltas, remote and queue
 * collectors, readiness checks and the /metrics /healthz /readyz server. See docs/observability.md.
 */
export { METRIC_PREFIX, METRIC_SPECS, metricNames, metricSpec, validateLabelValue, type MetricKind, type MetricName, type MetricSpec } from './catalogue.js'
export { ProxyMetrics, createMetrics, type CreateMetricsOptions, type Labels, type MetricWrite, type Rejection, type RejectReason } from './registry.js'
export { applyMetricDeltas, isMetricsMessage, type ApplyResult, type MetricDelta, type MetricsMessage } from './deltas.js'
export { createThreadMetricsRecorder, type ThreadMetricsRecorder, type ThreadMetricsRecorderOptions } from './thread-recorder.js'
export { attachRemoteMetrics, type RemoteEventSource, type RemoteMetricsTarget } from './remote-metrics.js'
export { QUEUE_STATES, collectQueueCounts, type CountableQueue, type QueueCollectorOptions, type QueueState } from './queue-collector.js'
export { combineReadiness, redisCheck, type PingableRedis, type Readiness, type ReadinessCheck } from './readiness.js'
export { parseListen, startHttpServer, type HttpServerHandle, type HttpServerOptions } from './http-server.js'
export { metricsHooks, startObservability, type JobEndInfo, type MetricsHooks, type Observability, type ObservabilityOptions, type ObservedRuntime, type RuntimeState } from './proxy-observability.js'

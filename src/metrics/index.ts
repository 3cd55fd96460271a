/**
 * Metrics and HTTP endpoints of a proxy: the registry (main thread), thread deltas, remote and queue
 * collectors, readiness checks and the /metrics /healthz /readyz server. See docs/observability.md.
 */
export { METRIC_SPECS, metricNames } from './catalogue.js'
export { ProxyMetrics, createMetrics } from './registry.js'
export { applyMetricDeltas, isMetricsMessage, type MetricsMessage } from './deltas.js'
export { createThreadMetricsRecorder } from './thread-recorder.js'
export { attachRemoteMetrics, type RemoteEventSource } from './remote-metrics.js'
export { collectQueueCounts } from './queue-collector.js'
export { combineReadiness, redisCheck } from './readiness.js'
export { parseListen, startHttpServer, type HttpServerHandle } from './http-server.js'
export { metricsHooks, startObservability, type Observability, type RuntimeState } from './proxy-observability.js'

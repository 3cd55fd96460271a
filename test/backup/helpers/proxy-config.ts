/** Raw config of the proxies the backup tests start (short locks so a killed proxy's job is recovered fast). */
export function proxyConfig(redisUrl: string, sealKey: string, proxyId: string): Record<string, unknown> {
  return {
    redis: { url: redisUrl },
    proxy: { id: proxyId },
    security: { sealKey },
    log: { level: 'silent' },
    workers: { threads: 2, concurrency: 2, attempts: 1, lockDurationMs: 4000, stalledIntervalMs: 1500, backoffMs: 100 },
  }
}

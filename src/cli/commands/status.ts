/** `backup-proxy status`: waiting/active/failed counts per queue and the live proxies with their load. */
import type { Command } from 'commander'
import type { ProxyStatus } from '../../queue/status.js'
import type { CliIo } from '../context.js'
import { commandConfig } from '../context.js'

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)))
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')
}

function formatStatus(status: ProxyStatus, now = Date.now()): string {
  const queues = table([
    ['QUEUE', 'WAITING', 'ACTIVE', 'DELAYED', 'FAILED', 'COMPLETED'],
    ...status.queues.map((q) => [q.name, String(q.counts.waiting + q.counts.prioritized), String(q.counts.active), String(q.counts.delayed), String(q.counts.failed), String(q.counts.completed)]),
  ])
  const proxies =
    status.proxies.length === 0
      ? 'no live proxy'
      : table([
          ['PROXY', 'INSTANCE', 'STATE', 'JOBS', 'CONCURRENCY', 'THREADS BUSY', 'QUEUES', 'SEEN'],
          ...status.proxies.map((p) => [
            p.proxyId,
            p.instance,
            p.state,
            String(p.activeJobs),
            String(p.concurrency),
            `${p.busyThreads}/${p.threads}`,
            p.queues.join(','),
            `${Math.max(0, Math.round((now - p.at) / 1000))}s ago`,
          ]),
        ])
  return `${status.queues.length === 0 ? 'no queue yet' : queues}\n\n${proxies}\n`
}

export function registerStatus(program: Command, io: CliIo): void {
  program
    .command('status')
    .description('show waiting/active/failed counts per queue and the live proxies with their load')
    .option('--json', 'machine-readable output')
    .option('--redis-url <url>', 'Redis URL (env REDIS_URL)')
    .action(async (flags: { json?: boolean; redisUrl?: string }, cmd: Command) => {
      const config = await commandConfig(cmd, { redis: { url: flags.redisUrl } })
      // one plain Redis connection, no BullMQ: status stays cheap to start
      const [{ createRedis, readyRedis, redisModeError }, { proxyStatus }] = await Promise.all([import('../../queue/redis.js'), import('../../queue/status.js')])
      const redis = createRedis(config.redis, 'backup-proxy:status')
      redis.on('error', () => undefined) // readyRedis reports a failed connection with the URL and the cause
      const client = { prefix: config.redis.prefix, redis: () => readyRedis(redis, config.redis) }
      try {
        const status = await proxyStatus(client).catch((error: unknown) => {
          throw redisModeError(error, config.redis) ?? error
        })
        io.stdout(flags.json === true ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status))
      } finally {
        redis.disconnect()
      }
    })
}

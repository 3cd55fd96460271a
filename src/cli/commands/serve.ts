/** `backup-proxy serve`: runs a proxy: BullMQ workers for its queues, the thread pool, and the HTTP endpoints. */
import type { Command } from 'commander'
import type { CliIo } from '../context.js'
import { collect, commandLogger, globalOptions, intArg } from '../context.js'

interface ServeFlags {
  proxy?: string
  pool?: string[]
  threads?: number
  concurrency?: number
  listen?: string
  redisUrl?: string
}

export function registerServe(program: Command, _io: CliIo): void {
  program
    .command('serve')
    .description('run a proxy: serve queue {proxy.<id>} (and pools), stream disks in threads, expose /metrics /healthz /readyz')
    .option('--proxy <id>', 'proxy id (config proxy.id)')
    .option('--pool <name>', 'also serve this pool queue (repeatable)', collect)
    .option('--threads <n>', 'disk streams at once (on up to one thread per CPU core)', intArg('--threads', 1, 64))
    .option('--concurrency <n>', 'jobs in parallel per queue', intArg('--concurrency', 1, 256))
    .option('--listen <host:port>', 'HTTP address for metrics and health')
    .option('--redis-url <url>', 'Redis URL (env REDIS_URL)')
    .action(async (flags: ServeFlags, cmd: Command) => {
      const sections = {
        proxy: { id: flags.proxy, pools: flags.pool },
        workers: { threads: flags.threads, concurrency: flags.concurrency },
        http: { listen: flags.listen },
        redis: { url: flags.redisUrl },
      }
      const g = globalOptions(cmd)
      const reload = {
        ...(g.config === undefined ? {} : { file: g.config }),
        flags: { ...sections, ...(g.logLevel === undefined ? {} : { log: { level: g.logLevel } }) },
      }
      // a long-lived process: young generations kept small (docs/backup.md, Memory), before the proxy's
      // modules load (loading them would grow the main thread's)
      ;(await import('../../common/gc-tuning.js')).applyServeGcTuning()
      const [{ loadConfig }, { serve }] = await Promise.all([import('../../config/index.js'), import('../../workers/serve.js')])
      const config = await loadConfig(reload)
      const logger = await commandLogger(config)
      await serve({ config, logger, reload })
    })
}

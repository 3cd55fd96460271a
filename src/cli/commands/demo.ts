/**
 * `backup-proxy demo`: a real backup of simulated VMs through the queue to a local remote, then verify
 * and restore (src/cli/demo/demo.ts). Exit 0 only when every step succeeded.
 */
import type { Command } from 'commander'
import { BackupProxyError } from '../../common/errors.js'
import type { CliIo } from '../context.js'
import { commandConfig, intArg, sizeOption } from '../context.js'

interface DemoFlags {
  vms: number
  diskSize: number
  dir?: string
  redisUrl?: string
  json?: boolean
}

export function registerDemo(program: Command, io: CliIo): void {
  program
    .command('demo')
    .description('start an XAPI simulator and a proxy, run a full then a delta backup through the queue to a local remote, verify and restore')
    .option('--vms <n>', 'simulated VMs', intArg('--vms', 1, 16), 2)
    .addOption(sizeOption('--disk-size <size>', 'virtual size of each disk', 256 * 1024 ** 2))
    .option('--dir <path>', 'local remote directory (default: a new temp dir, kept)')
    .option('--json', 'the narrative on stderr, the result as JSON on stdout')
    .option('--redis-url <url>', 'Redis URL (env REDIS_URL); a private redis-server is started if none answers')
    .action(async (flags: DemoFlags, cmd: Command) => {
      if (flags.diskSize % (2 * 1024 * 1024) !== 0 || flags.diskSize === 0) {
        throw new BackupProxyError('E_USAGE', `--disk-size must be a positive multiple of 2 MiB, got ${flags.diskSize} bytes`)
      }
      // the redis section of the config file and env (mode, sentinels, cluster nodes, TLS) applies too
      const config = await commandConfig(cmd, { redis: { url: flags.redisUrl } })
      const controller = new AbortController()
      const onSignal = () => controller.abort()
      process.once('SIGINT', onSignal)
      try {
        const { runDemo } = await import('../demo/demo.js')
        const result = await runDemo({
          vms: flags.vms,
          diskSizeBytes: flags.diskSize,
          ...(flags.dir === undefined ? {} : { dir: flags.dir }),
          redisUrl: config.redis.url,
          redis: config.redis,
          out: flags.json === true ? io.stderr : io.stdout,
          isTTY: io.isTTY,
          signal: controller.signal,
        })
        if (flags.json === true) io.stdout(`${JSON.stringify(result)}\n`)
        if (!result.ok) throw new BackupProxyError('E_BACKUP', 'the demo did not complete')
      } finally {
        process.off('SIGINT', onSignal)
      }
    })
}

/**
 * The action of `backup-proxy backup` (loaded only when it runs): builds the task, checks that a live
 * proxy serves the target queue (fail fast with E_NO_PROXY instead of waiting forever on a mistyped
 * `--proxy`), enqueues, and follows the job (../follow.ts).
 */
import type { Command } from 'commander'
import { BackupProxyError } from '../../common/errors.js'
import type { EnqueueClient } from '../../queue/client.js'
import { queueName, type QueueTarget } from '../../queue/names.js'
import { listProxies } from '../../queue/registry.js'
import type { CliIo } from '../context.js'
import { commandConfig, commandLogger } from '../context.js'
import { followJob } from '../follow.js'
import { targetOf, type BackupFlags } from './backup.js'
import { taskFromFlags } from './backup-task.js'

/** E_NO_PROXY unless a running proxy instance serves the queue of `target`. */
export async function assertLiveProxy(client: EnqueueClient, target: QueueTarget): Promise<void> {
  const name = queueName(target)
  const proxies = await listProxies(await client.redis(), client.prefix)
  if (proxies.some((p) => p.state === 'running' && p.queues.includes(name))) return
  const live = proxies.length === 0 ? 'no proxy is live at all' : `live proxies: ${[...new Set(proxies.map((p) => `${p.proxyId} (${p.queues.join(', ')})`))].join('; ')}`
  const flag = target.proxy !== undefined ? `--proxy ${target.proxy}` : `--pool ${target.pool}`
  throw new BackupProxyError(
    'E_NO_PROXY',
    `no live proxy serves queue ${name} (${live}): check ${flag} and the Redis URL and prefix, start one (backup-proxy serve ${target.proxy !== undefined ? `--proxy ${target.proxy}` : `--pool ${target.pool}`}), or pass --allow-no-proxy to queue the job for a proxy that will come`,
    { fields: { queue: name } },
  )
}

export async function runBackupCommand(flags: BackupFlags, cmd: Command, io: CliIo): Promise<void> {
  const target = targetOf(flags)
  const config = await commandConfig(cmd, { redis: { url: flags.redisUrl } })
  const task = await taskFromFlags(flags, cmd)
  const { EnqueueClient } = await import('../../queue/client.js')
  const client = await EnqueueClient.fromConfig(config, await commandLogger(config))
  try {
    if (flags.wait && flags.allowNoProxy !== true) await assertLiveProxy(client, target)
    const handle = await client.enqueue(target, task, {
      ...(flags.priority === undefined ? {} : { priority: flags.priority }),
      ...(flags.delay === undefined ? {} : { delayMs: flags.delay }),
    })
    if (!flags.wait) {
      io.stdout(flags.json === true ? `${JSON.stringify({ queue: handle.queue, jobId: handle.id })}\n` : `enqueued job ${handle.id} in ${handle.queue} (follow it: backup-proxy job follow ${handle.id})\n`)
      return
    }
    io.stderr(`enqueued job ${handle.id} in ${handle.queue}\n`)
    const [{ redactString }, { namesOfTask }] = await Promise.all([import('../../common/redact.js'), import('../job-view.js')])
    await followJob(handle, io, { ...(flags.json === undefined ? {} : { json: flags.json }), label: 'backup', names: namesOfTask(task, redactString) })
  } finally {
    await client.close()
  }
}

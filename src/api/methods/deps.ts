/**
 * What the API methods share: the configuration, the enqueue client (to the queue backup.run feeds),
 * the registry of followed runs, and opening a remote described the way xo-server sends it
 * (`{url, options}`: XO's URL with its credentials; XO's mount-options string is ignored).
 */
import { z } from 'zod'
import type { Logger } from '../../common/log.js'
import type { Config } from '../../config/index.js'
import type { EnqueueClient } from '../../queue/client.js'
import type { QueueTarget } from '../../queue/names.js'
import { remoteSchema } from '../../queue/tasks.js'
import { createRemote } from '../../remotes/index.js'
import type { Remote } from '../../remotes/remote.js'
import { remoteOptionsOf } from '../../backup/run.js'
import { RpcError, RPC_CODES } from '../rpc.js'
import type { RunRegistry } from '../runs.js'

export interface ApiDeps {
  config: Config
  client: EnqueueClient
  runs: RunRegistry
  /** the queue backup.run enqueues into */
  target: QueueTarget
  logger: Logger
}

/** A remote as xo-server passes it to a proxy: at least its URL. */
export const xoRemoteParam = z.object({ url: z.string().min(1).max(4096) }).catchall(z.unknown())
type XoRemoteParam = z.output<typeof xoRemoteParam>

/** Opens an XO remote, runs `fn`, always closes it. An invalid URL fails with E_TASK_INVALID naming url. */
export async function withXoRemote<T>(xo: XoRemoteParam, fn: (remote: Remote) => Promise<T>): Promise<T> {
  const options = typeof xo.options === 'object' && xo.options !== null ? xo.options : undefined
  const r = remoteSchema.safeParse({ url: xo.url, ...(options === undefined ? {} : { options }) })
  if (!r.success) {
    const errors = r.error.issues.map((i) => ({ path: ['remote', ...i.path.map(String)].join('.'), message: i.message }))
    throw new RpcError(RPC_CODES.INVALID_PARAMETERS, `invalid parameters: ${errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`, { code: 'E_REMOTE_URL', errors })
  }
  const parsed = r.data
  const remote = createRemote(parsed.url, remoteOptionsOf(parsed))
  await remote.open()
  try {
    return await fn(remote)
  } finally {
    await remote.close().catch(() => undefined)
  }
}

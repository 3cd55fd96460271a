/** STAND-IN thread task (tests and bench only): returns its input unchanged; measures dispatch overhead. */
import { BackupProxyError } from '../../common/errors.js'
import type { ThreadTaskContext } from '../thread-task.js'

interface NoopInput {
  value: number
  /** throw an error with this code instead (error-crossing tests) */
  failWithCode?: string
}

// eslint-disable-next-line @typescript-eslint/require-await -- a thread task is async by contract
export default async function noop(input: NoopInput, ctx: ThreadTaskContext): Promise<{ value: number; threadId: number }> {
  if (input.failWithCode !== undefined) {
    throw new BackupProxyError('E_BACKUP', `stand-in failure requested (${input.failWithCode})`, { fields: { requested: input.failWithCode } })
  }
  ctx.counter('backup_proxy_bytes_read_total', {}, 0)
  return { value: input.value, threadId: ctx.threadId }
}

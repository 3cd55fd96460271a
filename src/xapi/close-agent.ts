/**
 * Closes the HTTP agent of a disconnected `xen-api` client. xen-api's `disconnect()` leaves its undici
 * agent open with its keep-alive sockets: `serve` kept about 12 sockets (and their buffers) open per job
 * it had run, one closed client per job. Closing the agent lets the `session.logout` that `disconnect()`
 * sent finish; an XAPI that does not answer within `graceMs` gets its sockets destroyed.
 */
import type { Xapi } from 'xen-api'

export async function closeAgent(xapi: Xapi, graceMs = 2000): Promise<void> {
  const dispatcher = xapi._undiciDispatcher
  if (dispatcher === undefined) return
  let timer: NodeJS.Timeout | undefined
  const closed = dispatcher.close().then(
    () => true,
    () => false,
  )
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), graceMs)))
  try {
    if (!(await Promise.race([closed, late]))) await dispatcher.destroy().catch(() => undefined)
  } finally {
    clearTimeout(timer)
  }
}

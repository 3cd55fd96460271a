/**
 * The release step of a stream thread's teardown, both sides of it (messages.ts: the channel and its
 * messages). Piscina terminates a thread (pool close or destroy, idle retire) without running any of its
 * code: whatever the thread holds open — remotes leased from its RemoteCache, i.e. NFS mounts, SMB
 * sessions, S3 clients — would be dropped with its sockets instead of being closed (no unmount, no
 * logoff). So before the pool closes its threads it asks them to release (`releaseThreads`), and each
 * thread (`serveReleases`, started by the thread entry) runs its teardown once no task is running on it,
 * then answers. A thread that does not answer in time (stuck in a task that ignores its cancel, or still
 * starting, so holding nothing) is terminated anyway.
 *
 * Idle retire needs no message: a thread's remotes close after their bounded idle life (30 s), shorter
 * than the pool's idle timeout, so an idle thread holds nothing by the time Piscina retires it.
 */
import { randomBytes } from 'node:crypto'
import { BroadcastChannel, threadId } from 'node:worker_threads'
import { isReleasedReply, isReleaseRequest, THREAD_CONTROL_CHANNEL, type ReleasedReply, type ReleaseRequest } from './messages.js'

/**
 * Main side: asks `threadIds` to release what they hold and waits for their answers, at most
 * `timeoutMs`. Resolves with the ids of the threads that answered.
 */
export async function releaseThreads(threadIds: readonly number[], timeoutMs: number): Promise<number[]> {
  if (threadIds.length === 0) return []
  const channel = new BroadcastChannel(THREAD_CONTROL_CHANNEL)
  const request: ReleaseRequest = { type: 'release', requestId: randomBytes(8).toString('hex'), threadIds: [...threadIds] }
  const waiting = new Set(threadIds)
  const answered: number[] = []
  let timer: NodeJS.Timeout | undefined
  try {
    await new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs)
      channel.onmessage = (event) => {
        const reply: unknown = event.data
        if (!isReleasedReply(reply) || reply.requestId !== request.requestId || !waiting.delete(reply.threadId)) return
        answered.push(reply.threadId)
        if (waiting.size === 0) resolve()
      }
      channel.postMessage(request)
    })
  } finally {
    clearTimeout(timer)
    channel.close()
  }
  return answered
}

/**
 * Thread side: answers release requests naming this thread. `teardown` closes what the thread holds (it
 * must leave the thread usable: what it closed opens again on demand); it runs once `busy()` is false —
 * at once, or when `taskEnded()` is next called.
 */
export function serveReleases(teardown: () => Promise<void>, busy: () => boolean): { taskEnded: () => void } {
  const channel = new BroadcastChannel(THREAD_CONTROL_CHANNEL)
  // never what keeps a thread alive
  channel.unref()
  const pending: string[] = []
  let releasing = false
  const release = async (): Promise<void> => {
    if (releasing || pending.length === 0 || busy()) return
    releasing = true
    const requestIds = pending.splice(0)
    try {
      await teardown()
    } finally {
      releasing = false
      for (const requestId of requestIds) {
        const reply: ReleasedReply = { type: 'released', requestId, threadId }
        channel.postMessage(reply)
      }
      void release()
    }
  }
  channel.onmessage = (event) => {
    const request: unknown = event.data
    if (!isReleaseRequest(request) || !request.threadIds.includes(threadId)) return
    pending.push(request.requestId)
    void release()
  }
  return { taskEnded: () => void release() }
}

/**
 * STAND-IN thread task (until the backup engine's `backup.disk` lands; tests and demos only): streams
 * `sizeBytes` of deterministic bytes to a temporary file `.<name>.<random>.tmp` in `dir`, `chunkBytes` at a time with
 * `chunkDelayMs` between chunks, honouring backpressure; on success it renames the temporary to `<name>`
 * (nothing partial is ever visible under the final name). On cooperative cancel it destroys the stream,
 * removes the temporary and throws the CancelledError — the cleanup a real disk stream must do.
 */
import { randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { ThreadTaskContext } from '../thread-task.js'

interface StreamInput {
  dir: string
  name: string
  sizeBytes: number
  chunkBytes: number
  chunkDelayMs: number
  /** ignore the cooperative cancel (tests of the pool's forceful last step) */
  ignoreCancel?: boolean
}

interface StreamOutput {
  path: string
  writtenBytes: number
  threadId: number
}

/** What the stand-in posts as progress. */
interface StreamProgress {
  doneBytes: number
  totalBytes: number
}

export default async function stream(input: StreamInput, ctx: ThreadTaskContext<StreamProgress>): Promise<StreamOutput> {
  // a name of its own per attempt: an attempt aborted for a lost lock may still be removing its temporary
  // while the next attempt (another proxy) writes its own
  const temp = join(input.dir, `.${input.name}.${randomBytes(4).toString('hex')}.tmp`)
  const final = join(input.dir, input.name)
  const out = createWriteStream(temp)
  const chunk = Buffer.alloc(input.chunkBytes, 0x5a)
  let written = 0
  const t0 = performance.now()
  try {
    while (written < input.sizeBytes) {
      if (input.ignoreCancel !== true) ctx.throwIfCancelled()
      const n = Math.min(chunk.length, input.sizeBytes - written)
      if (!out.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
        await new Promise<void>((resolve, reject) => {
          const onDrain = () => { out.off('error', onError); resolve() }
          const onError = (e: Error) => { out.off('drain', onDrain); reject(e) }
          out.once('drain', onDrain)
          out.once('error', onError)
        })
      }
      written += n
      ctx.counter('backup_proxy_bytes_written_total', { remote: 'standin' }, n)
      ctx.progress({ doneBytes: written, totalBytes: input.sizeBytes })
      if (input.chunkDelayMs > 0) await sleep(input.chunkDelayMs, undefined, input.ignoreCancel === true ? {} : { signal: ctx.signal }).catch(() => undefined)
    }
    ctx.throwIfCancelled()
    await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())))
    await rename(temp, final)
    return { path: final, writtenBytes: written, threadId: ctx.threadId }
  } catch (error) {
    out.destroy()
    await rm(temp, { force: true })
    throw error
  } finally {
    ctx.observe('backup_proxy_disk_export_duration_seconds', {}, (performance.now() - t0) / 1000)
  }
}

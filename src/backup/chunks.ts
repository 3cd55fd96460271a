/**
 * Chunks of a Readable as an async iterable, one pushed chunk at a time. Written by hand because
 * `readable[Symbol.asyncIterator]()` reads in paused mode, where every `read()` concatenates all the
 * buffered chunks into a new buffer (up to the stream's highWaterMark: 4 MiB for an XAPI export) —
 * one extra copy and a large allocation per read, measured as the top GC cost of a disk export.
 * In flowing mode a Readable hands out its chunks as they are; the stream is paused while more than
 * `maxQueued` chunks wait, so backpressure still reaches the socket.
 */
import type { Readable } from 'node:stream'

export async function* chunksOf(stream: Readable, maxQueued = 16): AsyncGenerator<Buffer, void, undefined> {
  const queue: Buffer[] = []
  let ended = false
  let failure: Error | undefined
  let wake: (() => void) | undefined
  const notify = () => {
    const w = wake
    wake = undefined
    w?.()
  }
  const onData = (chunk: Buffer) => {
    queue.push(chunk)
    if (queue.length >= maxQueued) stream.pause()
    notify()
  }
  const onEnd = () => {
    ended = true
    notify()
  }
  const onError = (error: Error) => {
    failure = error
    notify()
  }
  stream.on('data', onData)
  stream.once('end', onEnd)
  stream.once('error', onError)
  stream.once('close', onEnd)
  try {
    for (;;) {
      const chunk = queue.shift()
      if (chunk !== undefined) {
        if (queue.length < maxQueued / 2 && stream.isPaused()) stream.resume()
        yield chunk
        continue
      }
      if (failure !== undefined) throw failure
      if (ended) {
        // 'close' without 'end' is a truncated stream: the consumer's length checks report it
        return
      }
      await new Promise<void>((resolve) => (wake = resolve))
    }
  } finally {
    stream.off('data', onData)
    stream.off('end', onEnd)
    stream.off('error', onError)
    stream.off('close', onEnd)
    if (!stream.readableEnded) stream.destroy()
  }
}

/**
 * A Readable's chunks gathered, as they arrive, into batches of at least `minBytes` (the last may be
 * smaller), each the list of the chunks themselves (no copy: a writer with `_writev` writes a batch in
 * one call). The chunks are taken in the 'data' handler, so the consumer's async steps run once per
 * batch rather than once per socket read (an XVA export arrives in 64 KiB reads: 16 async hops per MiB
 * through `chunksOf` were most of the transfer's CPU beside its MD5). The stream is paused while
 * `maxQueued` batches wait.
 */
export async function* batchesOf(stream: Readable, minBytes: number, maxQueued = 4): AsyncGenerator<Buffer[], void, undefined> {
  const queue: Buffer[][] = []
  let parts: Buffer[] = []
  let size = 0
  let ended = false
  let failure: Error | undefined
  let wake: (() => void) | undefined
  const notify = () => {
    const w = wake
    wake = undefined
    w?.()
  }
  const onData = (chunk: Buffer) => {
    parts.push(chunk)
    size += chunk.length
    if (size < minBytes) return
    queue.push(parts)
    parts = []
    size = 0
    if (queue.length >= maxQueued) stream.pause()
    notify()
  }
  const onEnd = () => {
    if (ended) return
    ended = true
    if (size > 0) queue.push(parts)
    parts = []
    notify()
  }
  const onError = (error: Error) => {
    failure = error
    notify()
  }
  stream.on('data', onData)
  stream.once('end', onEnd)
  stream.once('error', onError)
  stream.once('close', onEnd)
  try {
    for (;;) {
      const batch = queue.shift()
      if (batch !== undefined) {
        if (stream.isPaused() && !ended) stream.resume()
        yield batch
        continue
      }
      if (failure !== undefined) throw failure
      // 'close' without 'end' is a truncated stream: the consumer's length checks report it
      if (ended) return
      await new Promise<void>((resolve) => (wake = resolve))
    }
  } finally {
    stream.off('data', onData)
    stream.off('end', onEnd)
    stream.off('error', onError)
    stream.off('close', onEnd)
    if (!stream.readableEnded) stream.destroy()
  }
}

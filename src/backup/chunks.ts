/**
 * Chunks of a Readable as an async iterable, one pushed chunk at a time. Written by hand because
 * `readable[Symbol.asyncIterator]()` reads in paused mode, where every `read()` concatenates all the
 * buffered chunks into a new buffer (up to the stream's highWaterMark: 4 MiB for an XAPI export) —
 * one extra copy and a large allocation per read, measured as the top GC cost of a disk export.
 * In flowing mode a Readable hands out its chunks as they are; the stream is paused while more than
 * `maxQueued` chunks wait, so backpressure still reaches the socket.
 */
import type { Readable } from 'node:stream'

/** What a flowing stream's chunks become: `add` returns an item once one is complete, `flush` what is left at the end. */
interface Collector<T> {
  add(chunk: Buffer): T | undefined
  flush(): T | undefined
}

/**
 * The one reader behind chunksOf and batchesOf: takes the chunks in the 'data' handler, queues the
 * collector's items, pauses the stream while `maxQueued` wait and resumes it once fewer than
 * `resumeBelow` do.
 */
async function* flowing<T>(stream: Readable, collect: Collector<T>, maxQueued: number, resumeBelow: number): AsyncGenerator<T, void, undefined> {
  const queue: T[] = []
  let ended = false
  let failure: Error | undefined
  let wake: (() => void) | undefined
  const notify = () => {
    const w = wake
    wake = undefined
    w?.()
  }
  const onData = (chunk: Buffer) => {
    const item = collect.add(chunk)
    if (item === undefined) return
    queue.push(item)
    if (queue.length >= maxQueued) stream.pause()
    notify()
  }
  const onEnd = () => {
    if (ended) return
    ended = true
    const rest = collect.flush()
    if (rest !== undefined) queue.push(rest)
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
      const item = queue.shift()
      if (item !== undefined) {
        if (queue.length < resumeBelow && stream.isPaused() && !ended) stream.resume()
        yield item
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

export function chunksOf(stream: Readable, maxQueued = 16): AsyncGenerator<Buffer, void, undefined> {
  return flowing(stream, { add: (chunk) => chunk, flush: () => undefined }, maxQueued, maxQueued / 2)
}

/**
 * A Readable's chunks gathered, as they arrive, into batches of at least `minBytes` (the last may be
 * smaller), each the list of the chunks themselves (no copy: a writer with `_writev` writes a batch in
 * one call). The chunks are taken in the 'data' handler, so the consumer's async steps run once per
 * batch rather than once per socket read (an XVA export arrives in 64 KiB reads: 16 async hops per MiB
 * through `chunksOf` were most of the transfer's CPU beside its MD5). The stream is paused while
 * `maxQueued` batches wait.
 */
export function batchesOf(stream: Readable, minBytes: number, maxQueued = 4): AsyncGenerator<Buffer[], void, undefined> {
  let parts: Buffer[] = []
  let size = 0
  const take = (): Buffer[] => {
    const batch = parts
    parts = []
    size = 0
    return batch
  }
  const add = (chunk: Buffer): Buffer[] | undefined => {
    parts.push(chunk)
    size += chunk.length
    return size < minBytes ? undefined : take()
  }
  return flowing(stream, { add, flush: () => (size > 0 ? take() : undefined) }, maxQueued, Infinity)
}

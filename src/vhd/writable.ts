/**
 * Backpressure-aware helpers over a node Writable (a remote's atomic write stream). After a write() that
 * returned false, nothing more is written until 'drain'; but `write` resolves right after handing its
 * chunk over, and the wait happens at the start of the NEXT write, so the caller prepares (parses,
 * compresses) its next chunk while the stream flushes the previous one. At most the stream's
 * highWaterMark plus one chunk is buffered. `finish` ends the stream and
 * resolves once it is published ('finish'); `destroy` discards it (the remote removes its temporary).
 * The first error the stream emits is kept and rethrown by every later call.
 */
import { once } from 'node:events'
import type { Writable } from 'node:stream'
import { toError } from '../common/errors.js'

export class WritableSink {
  #error: Error | undefined
  bytesWritten = 0

  constructor(readonly stream: Writable) {
    stream.on('error', (error: unknown) => {
      this.#error ??= toError(error)
    })
  }

  #check(): void {
    if (this.#error !== undefined) throw this.#error
    if (this.stream.destroyed) throw new Error('the write stream was destroyed')
  }

  #pendingDrain: Promise<void> | undefined

  /**
   * `onWritten` is called once the stream's write callback reported the chunk written without error (a
   * stream whose writer keeps no reference to a chunk past that point may then have its buffer reused).
   */
  async write(chunk: Uint8Array, onWritten?: () => void): Promise<void> {
    await this.#waitDrain()
    this.#check()
    this.bytesWritten += chunk.length
    const accepted = onWritten === undefined ? this.stream.write(chunk) : this.stream.write(chunk, (error) => {
      if (error === undefined || error === null) onWritten()
    })
    if (!accepted) {
      const drained = this.#drain()
      drained.catch(() => undefined) // awaited (and its error rethrown) by the next write or finish
      this.#pendingDrain = drained
    }
  }

  async #waitDrain(): Promise<void> {
    const pending = this.#pendingDrain
    if (pending === undefined) return
    this.#pendingDrain = undefined
    await pending
  }

  async #drain(): Promise<void> {
    // plain listeners rather than events.once() with an AbortController: that costs two AbortErrors
    // (with stack traces) per drain, i.e. per block written
    const stream = this.stream
    await new Promise<void>((resolve, reject) => {
      const settle = (error?: unknown): void => {
        stream.off('drain', onDrain)
        stream.off('close', onDrain)
        stream.off('error', onError)
        if (error === undefined) resolve()
        else reject(toError(error))
      }
      const onDrain = (): void => settle()
      const onError = (error: unknown): void => settle(error)
      stream.on('drain', onDrain)
      stream.on('close', onDrain)
      stream.on('error', onError)
    })
    this.#check()
  }

  async finish(): Promise<void> {
    await this.#waitDrain()
    this.#check()
    const done = once(this.stream, 'finish')
    this.stream.end()
    await done
    if (this.#error !== undefined) throw this.#error
  }

  async destroy(reason: unknown): Promise<void> {
    // destroyed already (its own abort signal) but not closed yet: its cleanup (the temporary's removal)
    // is still running, wait for it too
    if (this.stream.closed) return
    const closed = once(this.stream, 'close').catch(() => undefined)
    if (!this.stream.destroyed) this.stream.destroy(toError(reason))
    await closed
  }
}

/**
 * Backpressure-aware helpers over a node Writable (a remote's atomic write stream): `write` resolves at
 * once while the stream's buffer has room and waits for 'drain' otherwise; `finish` ends the stream and
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

  async write(chunk: Uint8Array): Promise<void> {
    this.#check()
    this.bytesWritten += chunk.length
    if (!this.stream.write(chunk)) await this.#drain()
  }

  async #drain(): Promise<void> {
    const ac = new AbortController()
    try {
      await Promise.race([once(this.stream, 'drain', { signal: ac.signal }), once(this.stream, 'close', { signal: ac.signal })])
    } finally {
      ac.abort()
    }
    this.#check()
  }

  async finish(): Promise<void> {
    this.#check()
    const done = once(this.stream, 'finish')
    this.stream.end()
    await done
    if (this.#error !== undefined) throw this.#error
  }

  async destroy(reason: unknown): Promise<void> {
    if (this.stream.destroyed) return
    const closed = once(this.stream, 'close').catch(() => undefined)
    this.stream.destroy(toError(reason))
    await closed
  }
}

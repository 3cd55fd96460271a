/**
 * Exact-length reads from a socket (plain or TLS) as promises, for the NBD client and the simulator's
 * NBD server: `read(n)` resolves with exactly n bytes, `readInto(buf)` fills a caller's buffer (a pooled
 * VHD block buffer: the bytes are copied once, from the socket's chunks). The socket flows while less
 * than 4 MiB waits unread (pausing it between two reads would stall pipelined replies), and is paused
 * beyond that, so backpressure still reaches the peer. A read pending when the socket ends or
 * fails rejects with that error (an end mid-read is an ECONNRESET-coded error: the peer went away).
 */
import type { Socket } from 'node:net'

const HIGH_WATER_BYTES = 4 * 1024 * 1024

interface Pending {
  target: Buffer
  filled: number
  resolve: (b: Buffer) => void
  reject: (e: Error) => void
}

export class SocketReader {
  #chunks: Buffer[] = []
  #buffered = 0
  #pending: Pending | undefined
  #error: Error | undefined
  readonly #onData = (chunk: Buffer): void => {
    this.#chunks.push(chunk)
    this.#buffered += chunk.length
    this.#drain()
  }
  readonly #onEnd = (): void => this.#fail(Object.assign(new Error('the peer closed the connection'), { code: 'ECONNRESET' }))
  readonly #onError = (e: Error): void => this.#fail(e)

  constructor(readonly socket: Socket) {
    socket.on('data', this.#onData)
    socket.on('end', this.#onEnd)
    socket.on('close', this.#onEnd)
    socket.on('error', this.#onError)
    socket.pause()
  }

  /** Stops listening (before handing the socket to TLS); returns bytes already buffered. */
  detach(): Buffer {
    this.socket.off('data', this.#onData)
    this.socket.off('end', this.#onEnd)
    this.socket.off('close', this.#onEnd)
    this.socket.off('error', this.#onError)
    const rest = Buffer.concat(this.#chunks)
    this.#chunks = []
    this.#buffered = 0
    return rest
  }

  get buffered(): number {
    return this.#buffered
  }

  read(length: number): Promise<Buffer> {
    return this.readInto(Buffer.allocUnsafe(length))
  }

  readInto(target: Buffer): Promise<Buffer> {
    if (this.#pending !== undefined) return Promise.reject(new Error('SocketReader: one read at a time'))
    if (target.length === 0) return Promise.resolve(target)
    return new Promise((resolve, reject) => {
      this.#pending = { target, filled: 0, resolve, reject }
      this.#drain()
      if (this.#pending !== undefined) {
        if (this.#error !== undefined) this.#fail(this.#error)
        else this.socket.resume()
      }
    })
  }

  #drain(): void {
    const p = this.#pending
    if (p === undefined) {
      if (this.#buffered >= HIGH_WATER_BYTES) this.socket.pause()
      return
    }
    while (p.filled < p.target.length && this.#chunks.length > 0) {
      const chunk = this.#chunks[0]!
      const n = Math.min(chunk.length, p.target.length - p.filled)
      chunk.copy(p.target, p.filled, 0, n)
      p.filled += n
      this.#buffered -= n
      if (n === chunk.length) this.#chunks.shift()
      else this.#chunks[0] = chunk.subarray(n)
    }
    if (p.filled === p.target.length) {
      this.#pending = undefined
      if (this.#buffered >= HIGH_WATER_BYTES) this.socket.pause()
      p.resolve(p.target)
    }
  }

  #fail(e: Error): void {
    this.#error ??= e
    const p = this.#pending
    if (p === undefined) return
    this.#pending = undefined
    p.reject(this.#error)
  }
}

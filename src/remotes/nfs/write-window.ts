/**
 * The pipelined, crash-safe part of an NFSv3 file write, independent of the transport (so its verifier
 * logic can be tested against a scripted server).
 *
 * Bytes are copied into blocks of `blockBytes` taken from a small per-stream pool (one copy, no
 * per-chunk allocation, full-size WRITEs whatever the chunk sizes, and callers may reuse their buffers
 * as soon as their write callback ran). Up to `window` UNSTABLE WRITEs are in flight. An acknowledged
 * block is kept until a COMMIT returns the same write verifier its WRITE returned (RFC 1813 §3.3.21):
 * the server then has it on stable storage and the block goes back to the pool. When a WRITE or COMMIT
 * reply carries another verifier than before, the server lost its unstable data (it restarted): every
 * kept block whose verifier differs is sent again. A COMMIT is sent every `commitEveryBytes` acknowledged
 * bytes while writing goes on, which bounds the kept memory to about commitEveryBytes + window blocks.
 * FILE_SYNC replies release their block at once.
 */
import { RemoteError } from '../../common/errors.js'
import type { WriteResult } from './nfs3.js'

export interface WindowIo {
  write(offset: number, data: readonly Uint8Array[], count: number): Promise<WriteResult>
  /** COMMIT of the whole file; resolves with the verifier */
  commit(): Promise<string>
}

export interface WriteWindowOptions {
  /** WRITEs in flight */
  window: number
  blockBytes: number
  commitEveryBytes: number
  /** verifier changes tolerated before failing (a server restarting in a loop) */
  maxVerifierChanges?: number
  /** for error messages */
  label: string
}

const FILE_SYNC = 2

interface Block {
  buf: Buffer
  offset: number
  length: number
  state: 'filling' | 'inflight' | 'acked'
  verifier: string | undefined
}

export class WriteWindow {
  private readonly pool: Buffer[] = []
  /** blocks not yet released, in offset order */
  private readonly kept = new Set<Block>()
  private current: Block | undefined
  private nextOffset = 0
  private inFlight = 0
  private keptBytes = 0
  private ackedSinceCommit = 0
  private committing = false
  private verifier: string | undefined
  private verifierChanges = 0
  private failure: Error | undefined
  private waiters: { resolve: () => void; reject: (e: Error) => void; ready: () => boolean }[] = []
  /** bytes re-sent after a verifier change (for tests and logs) */
  resentBytes = 0

  constructor(
    private readonly io: WindowIo,
    private readonly options: WriteWindowOptions,
  ) {}

  get error(): Error | undefined {
    return this.failure
  }

  /** Bytes accepted so far. */
  get size(): number {
    return this.nextOffset + (this.current?.length ?? 0)
  }

  /** Copies `chunk` into blocks, sending every full one. Never blocks: wait with `whenReady()`. */
  push(chunk: Uint8Array): void {
    if (this.failure !== undefined) throw this.failure
    let at = 0
    while (at < chunk.length) {
      const block = (this.current ??= this.newBlock())
      const n = Math.min(chunk.length - at, block.buf.length - block.length)
      block.buf.set(chunk.subarray(at, at + n), block.length)
      block.length += n
      at += n
      if (block.length === block.buf.length) this.sendCurrent()
    }
  }

  /** True while more data may be pushed without exceeding the window or the kept-bytes bound. */
  ready(): boolean {
    const { window, blockBytes, commitEveryBytes } = this.options
    return this.inFlight < window && this.keptBytes < commitEveryBytes + window * blockBytes
  }

  /** Resolves when ready() (or rejects with the write error). */
  async whenReady(): Promise<void> {
    return this.waitFor(() => this.ready())
  }

  /** Sends what is left, waits for every WRITE, then commits until every block is on stable storage. */
  async finish(): Promise<void> {
    if (this.failure !== undefined) throw this.failure
    if (this.current !== undefined && this.current.length > 0) this.sendCurrent()
    for (;;) {
      await this.waitFor(() => this.inFlight === 0 && !this.committing)
      if (this.kept.size === 0) return
      this.commit()
    }
  }

  /** Fails the window (pending waiters reject); used when the stream is destroyed. */
  abort(error: Error): void {
    this.fail(error)
  }

  private newBlock(): Block {
    const buf = this.pool.pop() ?? Buffer.allocUnsafe(this.options.blockBytes)
    return { buf, offset: 0, length: 0, state: 'filling', verifier: undefined }
  }

  private sendCurrent(): void {
    const block = this.current!
    this.current = undefined
    block.offset = this.nextOffset
    this.nextOffset += block.length
    this.kept.add(block)
    this.keptBytes += block.length
    this.send(block)
  }

  private send(block: Block): void {
    block.state = 'inflight'
    this.inFlight++
    this.sendRange(block, 0).then(
      (result) => {
        this.inFlight--
        if (this.failure !== undefined) return
        if (result.committed === FILE_SYNC) {
          this.release(block)
        } else {
          block.state = 'acked'
          block.verifier = result.verifier
          this.ackedSinceCommit += block.length
          this.noteVerifier(result.verifier)
          if (this.ackedSinceCommit >= this.options.commitEveryBytes && !this.committing) this.commit()
        }
        this.wake()
      },
      (error: unknown) => this.fail(error instanceof Error ? error : new Error(String(error))),
    )
  }

  /** WRITE of block[from..]; a short write (count < asked) continues with the rest. */
  private async sendRange(block: Block, from: number): Promise<WriteResult> {
    const count = block.length - from
    const result = await this.io.write(block.offset + from, [block.buf.subarray(from, block.length)], count)
    if (result.count === 0) throw new RemoteError('EIO', `WRITE on ${this.options.label} wrote 0 bytes at offset ${block.offset + from}`, { fields: { detail: 'zero-length write' } })
    if (result.count < count) {
      const rest = await this.sendRange(block, from + result.count)
      // both parts must be committed under one verifier: keep the older if they differ (forces a resend)
      return rest.verifier === result.verifier ? rest : { ...rest, verifier: result.verifier, committed: Math.min(rest.committed, result.committed) }
    }
    return result
  }

  private commit(): void {
    this.committing = true
    const covered = [...this.kept].filter((b) => b.state === 'acked')
    this.ackedSinceCommit = 0
    this.io.commit().then(
      (verifier) => {
        this.committing = false
        if (this.failure !== undefined) return
        for (const b of covered) if (b.state === 'acked' && b.verifier === verifier) this.release(b)
        this.noteVerifier(verifier)
        this.wake()
      },
      (error: unknown) => this.fail(error instanceof Error ? error : new Error(String(error))),
    )
  }

  /** Tracks the server's verifier; on a change, re-sends every acknowledged block written under another one. */
  private noteVerifier(verifier: string): void {
    if (this.verifier === undefined) {
      this.verifier = verifier
      return
    }
    if (this.verifier !== verifier) {
      this.verifier = verifier
      this.verifierChanges++
      if (this.verifierChanges > (this.options.maxVerifierChanges ?? 3)) {
        this.fail(new RemoteError('EIO', `write to ${this.options.label}: the server's write verifier changed ${this.verifierChanges} times (it keeps restarting); the data could not be made durable`, { fields: { detail: 'verifier changed' } }))
        return
      }
    }
    for (const b of this.kept) {
      if (b.state === 'acked' && b.verifier !== this.verifier) {
        this.resentBytes += b.length
        this.ackedSinceCommit = Math.max(0, this.ackedSinceCommit - b.length)
        this.send(b)
      }
    }
  }

  private release(block: Block): void {
    if (!this.kept.delete(block)) return
    this.keptBytes -= block.length
    block.state = 'filling'
    // keep as many buffers as can be in use at once, so a steady write allocates (and page-faults) nothing
    const { window, blockBytes, commitEveryBytes } = this.options
    if (this.pool.length < window + Math.ceil(commitEveryBytes / blockBytes) + 1) this.pool.push(block.buf)
  }

  private async waitFor(ready: () => boolean): Promise<void> {
    if (this.failure !== undefined) throw this.failure
    if (ready()) return
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject, ready }))
  }

  private wake(): void {
    const waiting = this.waiters
    this.waiters = []
    for (const w of waiting) {
      if (w.ready()) w.resolve()
      else this.waiters.push(w)
    }
  }

  private fail(error: Error): void {
    if (this.failure !== undefined) return
    this.failure = error
    const waiting = this.waiters
    this.waiters = []
    for (const w of waiting) w.reject(error)
    this.kept.clear()
    this.pool.length = 0
    this.current = undefined
  }
}

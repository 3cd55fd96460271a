/**
 * Streams of the encrypted remote. EncryptingWriter buffers one chunk of plain data (it holds the
 * latest full chunk back until more data comes, so it knows which chunk is the last), seals each
 * chunk and writes it to the inner remote's atomic writer, waiting for 'drain'. Its 'finish' fires once
 * the inner writer has published. DecryptingTransform turns a sealed byte range back into plain bytes
 * of [start, end].
 */
import { Transform, Writable, type TransformCallback } from 'node:stream'
import { once } from 'node:events'
import { finished } from 'node:stream/promises'
import { decryptChunk, encryptChunk, encryptionError, OVERHEAD_BYTES, type EncryptionAlgorithm } from './encryption-format.js'

export interface CipherParams {
  algorithm: EncryptionAlgorithm
  key: Buffer
  header: Buffer
  chunkBytes: number
}

export class EncryptingWriter extends Writable {
  readonly #p: CipherParams
  readonly #inner: Writable
  readonly #onBytes: (n: number) => void
  readonly #pending: Buffer
  #fill = 0
  #index = 0

  constructor(params: CipherParams, inner: Writable, onBytes: (n: number) => void, signal?: AbortSignal) {
    super({ highWaterMark: params.chunkBytes, ...(signal === undefined ? {} : { signal }) })
    this.#p = params
    this.#inner = inner
    this.#onBytes = onBytes
    this.#pending = Buffer.allocUnsafe(params.chunkBytes)
    // an inner failure (remote down) fails this stream too
    inner.on('error', (e) => this.destroy(e))
    inner.write(params.header)
  }

  async #seal(last: boolean): Promise<void> {
    const sealed = encryptChunk(this.#p.algorithm, this.#p.key, this.#p.header, this.#index++, last, this.#pending.subarray(0, this.#fill))
    this.#fill = 0
    if (!this.#inner.write(sealed)) await once(this.#inner, 'drain')
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const run = async () => {
      let off = 0
      while (off < chunk.length) {
        if (this.#fill === this.#p.chunkBytes) await this.#seal(false)
        const n = chunk.copy(this.#pending, this.#fill, off)
        this.#fill += n
        off += n
      }
      this.#onBytes(chunk.length)
    }
    run().then(() => callback(), (e: unknown) => callback(e as Error))
  }

  override _final(callback: (error?: Error | null) => void): void {
    const run = async () => {
      await this.#seal(true)
      this.#inner.end()
      await finished(this.#inner)
    }
    run().then(() => callback(), (e: unknown) => callback(e as Error))
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.#inner.writableFinished) {
      this.#inner.destroy(error ?? new Error('encrypted write destroyed'))
    }
    callback(error)
  }
}

/**
 * Decrypts sealed chunks [first, ...] of a file with `totalChunks` chunks, and keeps plain bytes
 * [skip, skip + length) of the decrypted run.
 */
export class DecryptingTransform extends Transform {
  readonly #p: CipherParams
  readonly #path: string
  readonly #totalChunks: number
  readonly #sealedBytes: number
  #index: number
  #skip: number
  #left: number
  #buf: Buffer[] = []
  #bufBytes = 0

  constructor(params: CipherParams, path: string, firstChunk: number, totalChunks: number, skip: number, length: number) {
    super({ readableHighWaterMark: params.chunkBytes })
    this.#p = params
    this.#path = path
    this.#index = firstChunk
    this.#totalChunks = totalChunks
    this.#sealedBytes = params.chunkBytes + OVERHEAD_BYTES
    this.#skip = skip
    this.#left = length
  }

  #emit(sealed: Buffer): void {
    const last = this.#index === this.#totalChunks - 1
    let plain = decryptChunk(this.#p.algorithm, this.#p.key, this.#p.header, this.#index++, last, sealed, this.#path)
    if (this.#skip > 0) {
      const s = Math.min(this.#skip, plain.length)
      plain = plain.subarray(s)
      this.#skip -= s
    }
    if (plain.length > this.#left) plain = plain.subarray(0, this.#left)
    this.#left -= plain.length
    if (plain.length > 0) this.push(plain)
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.#buf.push(chunk)
      this.#bufBytes += chunk.length
      while (this.#bufBytes >= this.#sealedBytes) {
        const all = this.#buf.length === 1 ? (this.#buf[0] as Buffer) : Buffer.concat(this.#buf, this.#bufBytes)
        this.#emit(all.subarray(0, this.#sealedBytes))
        const rest = all.subarray(this.#sealedBytes)
        this.#buf = rest.length > 0 ? [rest] : []
        this.#bufBytes = rest.length
      }
      callback()
    } catch (error) {
      callback(error as Error)
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      if (this.#bufBytes > 0) this.#emit(Buffer.concat(this.#buf, this.#bufBytes))
      if (this.#left > 0) throw encryptionError(`"${this.#path}" ended ${this.#left} bytes early: the encrypted file is truncated`)
      callback()
    } catch (error) {
      callback(error as Error)
    }
  }
}

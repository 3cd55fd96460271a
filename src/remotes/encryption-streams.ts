/**
 * Streams of Xen Orchestra's whole-file encryption (see encryption-format.ts).
 *
 * SealingWriter writes the nonce, then each chunk through the cipher, then the tag, to the inner
 * remote's atomic writer (waiting for 'drain'); its 'finish' fires once the inner writer has published,
 * and a destroy() removes the inner temporary, so nothing partial is ever visible.
 *
 * OpeningTransform takes the nonce from the first 12 bytes, holds the last 16 bytes back (they may be
 * the tag) and checks the tag at the end. Plain bytes flow before the tag is checked (the file can be
 * GiBs): a failed check is an `E_ENCRYPTION` error at the end of the stream, so a consumer must treat
 * the data as valid only once the stream ended without error — every writer of ours publishes only
 * then. `readFile` checks the tag before returning anything.
 */
import { Transform, Writable, type TransformCallback } from 'node:stream'
import { once } from 'node:events'
import { finished } from 'node:stream/promises'
import {
  NONCE_BYTES,
  TAG_BYTES,
  authenticationError,
  createOpenDecipher,
  createSealCipher,
  encryptionError,
  type EncryptionAlgorithm,
} from './encryption-format.js'

export interface CipherParams {
  algorithm: EncryptionAlgorithm
  key: Buffer
}

export class SealingWriter extends Writable {
  readonly #inner: Writable
  readonly #cipher: ReturnType<typeof createSealCipher>['cipher']
  readonly #onBytes: (n: number) => void

  constructor(params: CipherParams, inner: Writable, onBytes: (n: number) => void, signal?: AbortSignal) {
    super({ highWaterMark: 1024 * 1024, ...(signal === undefined ? {} : { signal }) })
    this.#inner = inner
    this.#onBytes = onBytes
    const { nonce, cipher } = createSealCipher(params.algorithm, params.key)
    this.#cipher = cipher
    // an inner failure (remote down) fails this stream too
    inner.on('error', (e) => this.destroy(e))
    inner.write(nonce)
  }

  async #push(data: Buffer): Promise<void> {
    if (data.length > 0 && !this.#inner.write(data)) await once(this.#inner, 'drain')
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#push(this.#cipher.update(chunk)).then(
      () => {
        this.#onBytes(chunk.length)
        callback()
      },
      (e: unknown) => callback(e as Error),
    )
  }

  override _final(callback: (error?: Error | null) => void): void {
    const run = async () => {
      await this.#push(this.#cipher.final())
      await this.#push(this.#cipher.getAuthTag())
      this.#inner.end()
      await finished(this.#inner)
    }
    run().then(() => callback(), (e: unknown) => callback(e as Error))
  }

  /** 'close' waits for the inner writer's: its temporary is gone by then */
  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const inner = this.#inner
    if (inner.writableFinished || inner.closed) return callback(error)
    inner.once('close', () => callback(error))
    inner.destroy(error ?? new Error('encrypted write destroyed'))
  }
}

export class OpeningTransform extends Transform {
  readonly #p: CipherParams
  readonly #path: string
  #decipher: ReturnType<typeof createOpenDecipher> | undefined
  /** bytes not decrypted yet: the nonce while it is incomplete, then the last <= 16 bytes seen */
  #held: Buffer = Buffer.alloc(0)
  #plainBytes = 0

  constructor(params: CipherParams, path: string) {
    super()
    this.#p = params
    this.#path = path
  }

  get plainBytes(): number {
    return this.#plainBytes
  }

  #emit(data: Buffer): void {
    if (data.length === 0 || this.#decipher === undefined) return
    const plain = this.#decipher.update(data)
    this.#plainBytes += plain.length
    if (plain.length > 0) this.push(plain)
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      let data = chunk
      if (this.#decipher === undefined) {
        data = Buffer.concat([this.#held, chunk])
        if (data.length < NONCE_BYTES) {
          this.#held = data
          return callback()
        }
        this.#decipher = createOpenDecipher(this.#p.algorithm, this.#p.key, data.subarray(0, NONCE_BYTES))
        this.#held = Buffer.alloc(0)
        data = data.subarray(NONCE_BYTES)
      }
      if (data.length >= TAG_BYTES) {
        this.#emit(this.#held)
        this.#emit(data.subarray(0, data.length - TAG_BYTES))
        this.#held = Buffer.from(data.subarray(data.length - TAG_BYTES))
      } else {
        const all = Buffer.concat([this.#held, data])
        this.#emit(all.subarray(0, Math.max(0, all.length - TAG_BYTES)))
        this.#held = all.subarray(Math.max(0, all.length - TAG_BYTES))
      }
      callback()
    } catch (error) {
      callback(error as Error)
    }
  }

  override _flush(callback: TransformCallback): void {
    if (this.#decipher === undefined || this.#held.length < TAG_BYTES) {
      return callback(encryptionError(`"${this.#path}" is truncated: it is not a complete encrypted file`))
    }
    try {
      this.#decipher.setAuthTag(this.#held)
      this.#decipher.final()
      callback()
    } catch (error) {
      callback(authenticationError(this.#path, error))
    }
  }
}

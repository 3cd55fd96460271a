/**
 * The S3 remote's writer: a Writable over `@aws-sdk/lib-storage`'s Upload. Nothing is visible under the
 * key until the object is complete (PutObject for a single part, CompleteMultipartUpload otherwise),
 * so S3 needs no temporary name; 'finish' fires only once the object is published.
 *
 * Aborting cleanly: destroy(err) (or the signal) fails the Upload's body stream instead of calling
 * Upload.abort(). Upload.abort() makes done() reject at once while parts and the AbortMultipartUpload
 * still run in the background (nothing to await); a failing body makes done() settle only after every
 * part in flight returned and the multipart upload was aborted — so when this stream emits 'close',
 * no multipart upload is left behind. As a last resort a multipart upload of this key created by this
 * writer that is still listed is aborted too.
 *
 * Part size = max(floor, ceil(expected / 10,000)) rounded up to 1 MiB: a multi-TiB disk stays under
 * S3's 10,000-part limit.
 */
import type { S3Client } from '@aws-sdk/client-s3'
import { PassThrough, Writable } from 'node:stream'
import { RemoteError } from '../common/errors.js'
import type { S3Sdk } from './s3-sdk.js'

export const MIN_PART_BYTES = 5 * 1024 * 1024
export const MAX_PARTS = 10_000
/** S3's largest part */
const MAX_PART_BYTES = 5 * 1024 * 1024 * 1024

/** Part size for an object of `expectedBytes` (undefined: unknown) with a configured floor. */
export function choosePartSizeBytes(expectedBytes: number | undefined, floorBytes: number = MIN_PART_BYTES): number {
  const MiB = 1024 * 1024
  const needed = expectedBytes === undefined ? 0 : Math.ceil(expectedBytes / MAX_PARTS)
  const size = Math.ceil(Math.max(MIN_PART_BYTES, floorBytes, needed) / MiB) * MiB
  if (size > MAX_PART_BYTES) throw new RemoteError('EINVAL', `an object of ${expectedBytes} bytes needs parts over 5 GiB: S3 cannot store it (max ${MAX_PARTS} parts of 5 GiB)`)
  return size
}

interface S3WriterOptions {
  client: S3Client
  /** the SDK modules (loaded by the remote: s3-sdk.ts) */
  sdk: S3Sdk
  bucket: string
  key: string
  partSizeBytes: number
  concurrency: number
  signal?: AbortSignal
  onBytes: (bytes: number) => void
  mapError: (error: unknown) => Error
}

export class S3WriteStream extends Writable {
  readonly #o: S3WriterOptions
  readonly #body: PassThrough
  readonly #done: Promise<unknown>
  readonly #startedMs = Date.now()
  #published = false

  constructor(options: S3WriterOptions) {
    // small buffers in front of the Upload: it holds (concurrency + 1) parts itself, memory is bounded by that
    super({ highWaterMark: 1024 * 1024, ...(options.signal === undefined ? {} : { signal: options.signal }) })
    this.#o = options
    this.#body = new PassThrough({ highWaterMark: 1024 * 1024 })
    const upload = new options.sdk.storage.Upload({
      client: options.client,
      params: { Bucket: options.bucket, Key: options.key, Body: this.#body },
      partSize: options.partSizeBytes,
      queueSize: options.concurrency,
      leavePartsOnError: false,
    })
    this.#done = upload.done().then(() => {
      this.#published = true
    })
    // a failed part (remote down, denied) fails the writer now, not at end()
    this.#done.catch((e: unknown) => {
      if (!this.destroyed) this.destroy(this.#o.mapError(e))
    })
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#o.onBytes(chunk.length)
    if (this.#body.write(chunk)) callback()
    else this.#body.once('drain', () => callback())
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#body.end()
    this.#done.then(
      () => callback(),
      (e: unknown) => callback(this.#o.mapError(e)),
    )
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.#published) return callback(error)
    this.#body.destroy(error ?? new Error('S3 upload destroyed'))
    const cleanup = async () => {
      await this.#done.catch(() => undefined) // the upload's own failure is the cause we report below
      await this.#sweep()
    }
    cleanup().then(
      () => callback(error),
      (e: unknown) => callback(error ?? this.#o.mapError(e)),
    )
  }

  /** Aborts multipart uploads of this key started by this writer that are still listed. */
  async #sweep(): Promise<void> {
    const { client, bucket, key } = this.#o
    const { ListMultipartUploadsCommand, AbortMultipartUploadCommand } = this.#o.sdk.s3
    let res
    try {
      res = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: key }))
    } catch (error) {
      const e = error as { name?: unknown; $metadata?: { httpStatusCode?: number } }
      if (e.name === 'NotImplemented' || e.$metadata?.httpStatusCode === 501) return // cannot list (s3rver): lib-storage aborted its upload by id
      throw error
    }
    for (const u of res.Uploads ?? []) {
      if (u.Key !== key || u.UploadId === undefined) continue
      if (u.Initiated !== undefined && u.Initiated.getTime() < this.#startedMs - 5000) continue // another writer's
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: u.UploadId }))
    }
  }
}

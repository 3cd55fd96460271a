/**
 * S3 remote on `@aws-sdk/client-s3` (+ lib-storage for uploads, see s3-writer.ts), for AWS and
 * S3-compatible stores (Swift s3api, MinIO, Ceph RGW...): custom endpoint and region, plain HTTP for
 * labs (`s3+http://`), certificates checked unless `allowUnauthorized`, path-style by default for
 * custom endpoints and virtual-host for `*.amazonaws.com` (option `s3PathStyle` overrides).
 *
 * Retries are the SDK's "standard" strategy: exponential backoff with full jitter, only for throttling,
 * transient network errors (resets, timeouts) and 5xx — the same classes we would pick by hand, so no
 * second retry layer here (nested retries multiply waits).
 *
 * S3 has no directories: a directory exists while a key lies below it; `mkdir` is a no-op. `rename` is
 * copy + delete (not atomic): writers publish by writing the final key last, never by renaming.
 * Temporaries on S3 are pending multipart uploads; `removeTemporaries` aborts those too. Only the S3
 * primitives live here; path checks, tracking and the rest of the shared work are the Remote base class's.
 * The SDK is loaded on the first request (s3-sdk.ts): creating an S3Remote costs no SDK.
 */
import type { ListObjectsV2CommandOutput, S3Client, S3ClientConfig } from '@aws-sdk/client-s3'
import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import { Readable, type Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { RemoteError } from '../common/errors.js'
import { Remote, type ListEntry, type ListOptions, type ReadRange, type RemoteCapabilities, type RemoteStat, type WriteFileOptions, type WriteStreamOptions, type WriteTarget } from './remote.js'
import { choosePartSizeBytes, MIN_PART_BYTES, S3WriteStream } from './s3-writer.js'
import { toS3RemoteError } from './s3-errors.js'
import { loadS3Sdk, type S3Sdk } from './s3-sdk.js'
import { deleteEach, isNotImplemented, truncate, withContentMd5 } from './s3-helpers.js'
import type { RemoteOptions, S3RemoteUrl } from './url-types.js'
import { redactRemoteUrl } from './url.js'

const DEFAULT_PART_BYTES = 16 * 1024 * 1024
const DEFAULT_UPLOAD_CONCURRENCY = 4
/** writeFile sends buffers up to this size in one PutObject */
const SINGLE_PUT_MAX_BYTES = 64 * 1024 * 1024

const S3_CAPABILITIES: RemoteCapabilities = { forcesVhdDirectory: true, releasesChunkOnWriteCallback: false }

export class S3Remote extends Remote {
  readonly kind = 's3' as const

  /** Xen Orchestra's S3 handler always answers useVhdDirectory() true: backups on S3 are VhdDirectory. */
  override get capabilities(): RemoteCapabilities {
    return S3_CAPABILITIES
  }
  readonly displayUrl: string
  readonly bucket: string
  /** key prefix, '' or ending without '/' */
  readonly prefix: string
  readonly #clientConfig: S3ClientConfig
  #client: S3Client | undefined
  readonly #partFloorBytes: number
  readonly #concurrency: number
  #opened = false
  /** the server answered NotImplemented to DeleteObjects once */
  #noBatchDelete = false

  constructor(url: S3RemoteUrl, options: RemoteOptions = {}) {
    super()
    this.displayUrl = redactRemoteUrl(url)
    this.bucket = url.bucket
    this.prefix = url.path
    const floor = options.uploadPartSizeBytes ?? DEFAULT_PART_BYTES
    if (!Number.isSafeInteger(floor) || floor < MIN_PART_BYTES) throw new RemoteError('EINVAL', `${this.displayUrl}: uploadPartSizeBytes must be an integer >= 5 MiB (S3's minimum part), got ${floor}`)
    const concurrency = options.uploadConcurrency ?? DEFAULT_UPLOAD_CONCURRENCY
    if (!Number.isSafeInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new RemoteError('EINVAL', `${this.displayUrl}: uploadConcurrency must be an integer from 1 to 64, got ${concurrency}`)
    this.#partFloorBytes = floor
    this.#concurrency = concurrency
    const endpoint = `${url.protocol}://${url.host}${url.port === undefined ? '' : `:${url.port}`}`
    const pathStyle = options.s3PathStyle ?? !/(^|\.)amazonaws\.com$/i.test(url.host)
    const sockets = Math.max(16, concurrency * 2)
    this.#clientConfig = {
      endpoint,
      region: url.region ?? 'us-east-1',
      forcePathStyle: pathStyle,
      ...(url.accessKeyId === '' ? {} : { credentials: { accessKeyId: url.accessKeyId, secretAccessKey: url.secretAccessKey } }),
      maxAttempts: options.s3MaxAttempts ?? 5,
      retryMode: 'standard',
      // CRC32 of every part in JS costs more CPU than the upload itself; SigV4 already covers integrity
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        httpAgent: new HttpAgent({ keepAlive: true, maxSockets: sockets }),
        httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: sockets, rejectUnauthorized: options.allowUnauthorized !== true }),
        connectionTimeout: 10_000,
        requestTimeout: 300_000,
      },
    }
  }

  /** The SDK's client, once a request made it (tests and tools that send their own commands). */
  get client(): S3Client {
    if (this.#client === undefined) throw new RemoteError('E_REMOTE', `${this.displayUrl}: no request was made yet (open the remote first)`)
    return this.#client
  }

  /** The SDK, loaded (and this remote's client made) on first use. */
  async #sdk(): Promise<S3Sdk> {
    const sdk = await loadS3Sdk()
    this.#client ??= new sdk.s3.S3Client(this.#clientConfig)
    return sdk
  }

  /** Bucket key of a remote path ('' is the remote's root). */
  #key(rel: string): string {
    return this.prefix === '' ? rel : rel === '' ? this.prefix : `${this.prefix}/${rel}`
  }

  /** Prefix under which a directory's keys live. */
  #dirPrefix(key: string): string {
    return key === '' ? '' : `${key}/`
  }

  #fail(op: string, path: string): (e: unknown) => never {
    return (e: unknown) => {
      throw toS3RemoteError(e, op, path, this.displayUrl)
    }
  }

  protected override mapError(error: unknown, op: string, path: string): Error {
    return toS3RemoteError(error, op, path, this.displayUrl)
  }

  protected async _open(): Promise<void> {
    const { s3 } = await this.#sdk()
    if (this.#opened) return
    await this.client.send(new s3.HeadBucketCommand({ Bucket: this.bucket })).catch(this.#fail('open (HeadBucket)', this.bucket))
    this.#opened = true
  }

  protected async _close(): Promise<void> {
    this.#opened = false
    this.#client?.destroy()
    this.#client = undefined
    await Promise.resolve()
  }

  /** A multipart upload (S3's temporary) completed on end(); `target.temporary` is not used. */
  protected async _createWriteStream(target: WriteTarget, options: WriteStreamOptions): Promise<Writable> {
    const sdk = await this.#sdk()
    const rel = target.path
    const key = this.#key(rel)
    const partSizeBytes = choosePartSizeBytes(options.expectedSizeBytes, this.#partFloorBytes)
    if (options.exclusive === true) await this.#refuseExisting(rel, key)
    return new S3WriteStream({
      client: this.client,
      sdk,
      bucket: this.bucket,
      key,
      partSizeBytes,
      concurrency: this.#concurrency,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      onBytes: (n) => this.countBytes('write', n),
      mapError: (e) => toS3RemoteError(e, 'write', rel, this.displayUrl),
    })
  }

  /** S3 has no create-exclusive on every server: check first (a race with another writer stays possible). */
  async #refuseExisting(rel: string, key: string): Promise<void> {
    const { s3 } = await this.#sdk()
    try {
      await this.client.send(new s3.HeadObjectCommand({ Bucket: this.bucket, Key: key }))
    } catch (error) {
      if (toS3RemoteError(error, 'stat', rel, this.displayUrl).code === 'ENOENT') return
      throw toS3RemoteError(error, 'stat', rel, this.displayUrl)
    }
    throw new RemoteError('EEXIST', `write "${rel}" on ${this.displayUrl} refused: it already exists`, { fields: { path: rel } })
  }

  protected async _createReadStream(rel: string, range: ReadRange): Promise<Readable> {
    const { s3 } = await this.#sdk()
    const { start, end, signal } = range
    if (end !== undefined && end < start) return Readable.from([])
    const asked = start === 0 && end === undefined ? undefined : `bytes=${start}-${end ?? ''}`
    let res
    try {
      res = await this.client.send(
        new s3.GetObjectCommand({ Bucket: this.bucket, Key: this.#key(rel), ...(asked === undefined ? {} : { Range: asked }) }),
        signal === undefined ? {} : { abortSignal: signal },
      )
    } catch (error) {
      // a start at or past the end: node:fs gives an empty stream, S3 a 416
      if ((error as { name?: string }).name === 'InvalidRange') {
        await this._stat(rel)
        return Readable.from([])
      }
      throw toS3RemoteError(error, 'read', rel, this.displayUrl)
    }
    const body = res.Body
    if (!(body instanceof Readable)) throw new RemoteError('E_REMOTE', `read "${rel}" on ${this.displayUrl}: the response has no body stream`)
    const { out, length } = this.#keepRange(rel, body, { start, end, asked, length: res.ContentLength ?? 0, contentRange: res.ContentRange })
    out.once('end', () => this.countBytes('read', length))
    this.bindSignal(out, signal)
    return out
  }

  /** The asked range of a GET's body: some servers (s3rver: `bytes=0-0`) send more than asked for. */
  #keepRange(rel: string, body: Readable, r: { start: number; end: number | undefined; asked: string | undefined; length: number; contentRange: string | undefined }): { out: Readable; length: number } {
    const { start, end } = r
    const served = /^bytes (\d+)-(\d+)\//.exec(r.contentRange ?? '')
    if (r.asked !== undefined && served === null && start > 0) {
      body.destroy()
      throw new RemoteError('EIO', `read "${rel}" on ${this.displayUrl}: asked for bytes from ${start}, the server sent the whole object: it does not support ranged reads`)
    }
    if (end === undefined || (served === null ? r.length <= end - start + 1 : Number(served[1]) === start && Number(served[2]) <= end)) return { out: body, length: r.length }
    if (served !== null && Number(served[1]) !== start) {
      body.destroy()
      throw new RemoteError('EIO', `read "${rel}" on ${this.displayUrl}: asked for bytes ${start}-${end}, the server sent ${r.contentRange}`)
    }
    const length = end - start + 1
    return { out: Readable.from(truncate(length)(body)), length }
  }

  protected override async _readFile(rel: string, signal: AbortSignal | undefined): Promise<Buffer> {
    const { s3 } = await this.#sdk()
    const res = await this.client
      .send(new s3.GetObjectCommand({ Bucket: this.bucket, Key: this.#key(rel) }), signal === undefined ? {} : { abortSignal: signal })
      .catch(this.#fail('readFile', rel))
    const data = Buffer.from((await res.Body?.transformToByteArray()) ?? new Uint8Array())
    this.countBytes('read', data.length)
    return data
  }

  /** One PutObject up to 64 MiB; larger buffers go through a multipart upload. */
  protected override async _writeFile(rel: string, body: Uint8Array, options: WriteFileOptions): Promise<void> {
    const { s3 } = await this.#sdk()
    if (body.byteLength > SINGLE_PUT_MAX_BYTES) {
      const out = await this._createWriteStream({ path: rel, temporary: '' }, { ...options, expectedSizeBytes: body.byteLength })
      out.end(body)
      await finished(out)
      return
    }
    const key = this.#key(rel)
    if (options.exclusive === true) await this.#refuseExisting(rel, key)
    await this.client
      .send(new s3.PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.byteLength }), options.signal === undefined ? {} : { abortSignal: options.signal })
      .catch(this.#fail('writeFile', rel))
    this.countBytes('write', body.byteLength)
  }

  /** Every page of a listing. */
  async *#pages(prefix: string, delimiter: boolean, rel: string): AsyncGenerator<ListObjectsV2CommandOutput> {
    const { s3 } = await this.#sdk()
    let token: string | undefined
    do {
      const page = await this.client
        .send(new s3.ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ...(delimiter ? { Delimiter: '/' } : {}), ...(token === undefined ? {} : { ContinuationToken: token }) }))
        .catch(this.#fail('list', rel))
      yield page
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined
    } while (token !== undefined)
  }

  protected async _list(rel: string, options: ListOptions): Promise<ListEntry[]> {
    const prefix = this.#dirPrefix(this.#key(rel))
    const recursive = options.recursive === true
    const out: ListEntry[] = []
    let seen = false
    for await (const page of this.#pages(prefix, !recursive, rel)) {
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined) continue
        seen = true
        const p = o.Key.slice(prefix.length)
        if (p === '' || p.endsWith('/')) continue // directory markers made by other tools
        out.push({ path: p, isDirectory: false })
      }
      for (const cp of page.CommonPrefixes ?? []) {
        if (cp.Prefix === undefined) continue
        seen = true
        const p = cp.Prefix.slice(prefix.length, -1)
        if (p !== '') out.push({ path: p, isDirectory: true })
      }
    }
    if (!seen && rel !== '') throw new RemoteError('ENOENT', `list "${rel}" on ${this.displayUrl} failed: no such directory`, { fields: { path: rel } })
    return out
  }

  async #isDirectory(key: string): Promise<boolean> {
    const { s3 } = await this.#sdk()
    const res = await this.client.send(new s3.ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.#dirPrefix(key), MaxKeys: 1 }))
    return (res.KeyCount ?? res.Contents?.length ?? 0) > 0
  }

  protected async _stat(rel: string): Promise<RemoteStat> {
    const { s3 } = await this.#sdk()
    if (rel === '') return { size: 0, isDirectory: true, mtimeMs: 0 }
    const key = this.#key(rel)
    try {
      const h = await this.client.send(new s3.HeadObjectCommand({ Bucket: this.bucket, Key: key }))
      return { size: h.ContentLength ?? 0, isDirectory: false, mtimeMs: h.LastModified?.getTime() ?? 0 }
    } catch (error) {
      const mapped = toS3RemoteError(error, 'stat', rel, this.displayUrl)
      if (mapped.code === 'ENOENT' && (await this.#isDirectory(key).catch(this.#fail('stat', rel)))) return { size: 0, isDirectory: true, mtimeMs: 0 }
      throw mapped
    }
  }

  protected async _rename(from: string, to: string): Promise<void> {
    const { s3 } = await this.#sdk()
    const source = `${this.bucket}/${this.#key(from).split('/').map(encodeURIComponent).join('/')}`
    await this.client.send(new s3.CopyObjectCommand({ Bucket: this.bucket, Key: this.#key(to), CopySource: source })).catch(this.#fail('rename (copy)', `${from} -> ${to}`))
    await this.client.send(new s3.DeleteObjectCommand({ Bucket: this.bucket, Key: this.#key(from) })).catch(this.#fail('rename (delete)', from))
  }

  protected async _unlink(rel: string): Promise<void> {
    const { s3 } = await this.#sdk()
    const s = await this._stat(rel) // DeleteObject succeeds on missing keys; the contract says ENOENT
    if (s.isDirectory) throw new RemoteError('EISDIR', `unlink "${rel}" on ${this.displayUrl}: it is a directory`, { fields: { path: rel } })
    await this.client.send(new s3.DeleteObjectCommand({ Bucket: this.bucket, Key: this.#key(rel) })).catch(this.#fail('unlink', rel))
  }

  protected async _rmtree(rel: string): Promise<void> {
    const prefix = this.#dirPrefix(this.#key(rel))
    for await (const page of this.#pages(prefix, false, rel)) {
      const keys = (page.Contents ?? []).flatMap((o) => (o.Key === undefined ? [] : [o.Key]))
      if (keys.length > 0) await this.#deleteKeys(keys, rel)
    }
    await this.#abortUploads(prefix, rel)
  }

  /** DeleteObjects, or one DeleteObject per key on servers without it (s3rver, some gateways). */
  async #deleteKeys(keys: string[], rel: string): Promise<void> {
    const { s3 } = await this.#sdk()
    let res
    try {
      if (this.#noBatchDelete) throw Object.assign(new Error('DeleteObjects not implemented'), { name: 'NotImplemented' })
      res = await this.client.send(withContentMd5(new s3.DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true } })))
    } catch (error) {
      if (!isNotImplemented(error)) throw toS3RemoteError(error, 'rmtree', rel, this.displayUrl)
      this.#noBatchDelete = true // 8 at a time from now on
      await deleteEach(keys, 8, (k) => this.client.send(new s3.DeleteObjectCommand({ Bucket: this.bucket, Key: k })).then(() => undefined)).catch(this.#fail('rmtree', rel))
      return
    }
    const failed = res.Errors ?? []
    if (failed.length > 0) throw new RemoteError('EIO', `rmtree "${rel}" on ${this.displayUrl}: ${failed.length} objects were not deleted (first: ${failed[0]?.Key}: ${failed[0]?.Code} ${failed[0]?.Message})`)
  }

  protected async _mkdir(): Promise<void> {
    await Promise.resolve() // S3 has no directories
  }

  /** Aborts pending multipart uploads below `prefix` (S3's temporaries); returns how many. */
  async #abortUploads(prefix: string, rel: string): Promise<number> {
    const { s3 } = await this.#sdk()
    let n = 0
    let keyMarker: string | undefined
    let idMarker: string | undefined
    for (;;) {
      let res
      try {
        res = await this.client.send(
          new s3.ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix, ...(keyMarker === undefined ? {} : { KeyMarker: keyMarker }), ...(idMarker === undefined ? {} : { UploadIdMarker: idMarker }) }),
        )
      } catch (error) {
        if (isNotImplemented(error)) return n // the server cannot list uploads (s3rver): nothing we can find to abort
        throw toS3RemoteError(error, 'list uploads', rel, this.displayUrl)
      }
      for (const u of res.Uploads ?? []) {
        if (u.Key === undefined || u.UploadId === undefined) continue
        await this.client.send(new s3.AbortMultipartUploadCommand({ Bucket: this.bucket, Key: u.Key, UploadId: u.UploadId })).catch(this.#fail('abort upload', u.Key))
        n++
      }
      if (res.IsTruncated !== true) return n
      keyMarker = res.NextKeyMarker
      idMarker = res.NextUploadIdMarker
    }
  }

  /** Temporaries plus pending multipart uploads left by killed writers (call it with no writer active). */
  override async removeTemporaries(dir: string): Promise<number> {
    const files = await super.removeTemporaries(dir)
    const rel = this.resolvePath(dir)
    return files + (await this.track('removeTemporaries', () => this.#abortUploads(this.#dirPrefix(this.#key(rel)), rel)))
  }

  /** The part size a write of `expectedSizeBytes` will use. */
  partSizeFor(expectedSizeBytes?: number): number {
    return choosePartSizeBytes(expectedSizeBytes, this.#partFloorBytes)
  }
}


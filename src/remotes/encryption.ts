/**
 * Client-side encryption for any remote (Xen Orchestra's model): the remote has one key; its root holds
 * `encryption.json` (plain: algorithm, file format, chunk size) and `metadata.json` (encrypted with the
 * key) whose authentication proves the key is right before anything else is read or written. A wrong
 * key is an `E_ENCRYPTION` error at open(), never garbage data. Files are sealed per chunk (see
 * encryption-format.ts) so ranged reads decrypt only the chunks they touch.
 *
 * EncryptedRemote wraps another Remote; `root` optionally places it in a sub-directory of the inner one.
 * Encryption is enabled on an empty remote only: a remote holding plain backups is refused, as XO does.
 */
import { randomUUID } from 'node:crypto'
import type { Readable, Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { RemoteError, errorCode } from '../common/errors.js'
import {
  ALGORITHMS,
  DEFAULT_CHUNK_BYTES,
  HEADER_BYTES,
  OVERHEAD_BYTES,
  chunkCount,
  encryptionError,
  makeHeader,
  parseEncryptionKey,
  parseHeader,
  plainSize,
  type EncryptionAlgorithm,
} from './encryption-format.js'
import { DecryptingTransform, EncryptingWriter, type CipherParams } from './encryption-streams.js'
import { Remote, type ListEntry, type ListOptions, type ReadStreamOptions, type RemoteStat, type WriteFileOptions, type WriteStreamOptions } from './remote.js'
import { checkRange } from './remote-errors.js'

export const ENCRYPTION_FILE = 'encryption.json'
export const METADATA_FILE = 'metadata.json'
const FORMAT = 'backup-proxy-chunked-1'

export interface EncryptionOptions {
  /** 32 characters (XO) or 64 hex digits */
  key: string
  /** for a new remote; an existing one keeps what its encryption.json says. Default aes-256-gcm */
  algorithm?: EncryptionAlgorithm
  chunkSizeBytes?: number
  /** sub-directory of the inner remote the encrypted remote lives in; default its root */
  root?: string
}

interface EncryptionJson {
  algorithm: EncryptionAlgorithm
  format: string
  chunkSizeBytes: number
}

export function createEncryptedRemote(inner: Remote, options: EncryptionOptions): EncryptedRemote {
  return new EncryptedRemote(inner, options)
}

export class EncryptedRemote extends Remote {
  readonly kind: Remote['kind']
  readonly displayUrl: string
  readonly #inner: Remote
  readonly #key: Buffer
  readonly #root: string
  readonly #wanted: { algorithm: EncryptionAlgorithm; chunkBytes: number }
  #params: CipherParams | undefined

  constructor(inner: Remote, options: EncryptionOptions) {
    super()
    this.#inner = inner
    this.kind = inner.kind
    this.#key = parseEncryptionKey(options.key)
    this.#root = inner.resolvePath(options.root ?? '')
    this.displayUrl = `${inner.displayUrl}${this.#root === '' ? '' : ` [${this.#root}]`} (encrypted)`
    const algorithm = options.algorithm ?? 'aes-256-gcm'
    if (!ALGORITHMS.includes(algorithm)) throw encryptionError(`unknown encryption algorithm "${String(algorithm)}": use ${ALGORITHMS.join(' or ')}`)
    const chunkBytes = options.chunkSizeBytes ?? DEFAULT_CHUNK_BYTES
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 4096 || chunkBytes > 64 * 1024 * 1024) throw encryptionError(`chunkSizeBytes must be an integer from 4096 to 64 MiB, got ${chunkBytes}`)
    this.#wanted = { algorithm, chunkBytes }
  }

  #inPath(path: string): string {
    const rel = this.resolvePath(path)
    return this.#root === '' ? rel : rel === '' ? this.#root : `${this.#root}/${rel}`
  }

  get #p(): CipherParams {
    if (this.#params === undefined) throw encryptionError(`${this.displayUrl} is not open: call open() first`)
    return this.#params
  }

  async open(): Promise<void> {
    if (this.#params !== undefined) return
    await this.track('open', async () => {
      await this.#inner.open()
      const encPath = this.#inPath(ENCRYPTION_FILE)
      let conf: EncryptionJson
      try {
        conf = JSON.parse((await this.#inner.readFile(encPath)).toString('utf8')) as EncryptionJson
      } catch (error) {
        if (errorCode(error) !== 'ENOENT') throw error
        conf = await this.#initialize()
      }
      if (conf.format !== FORMAT || !ALGORITHMS.includes(conf.algorithm) || !Number.isSafeInteger(conf.chunkSizeBytes)) {
        throw encryptionError(`${this.displayUrl}: ${ENCRYPTION_FILE} describes an unsupported encryption (${JSON.stringify(conf)}); it was not written by this version of backup-proxy`)
      }
      const params: CipherParams = { algorithm: conf.algorithm, key: this.#key, header: makeHeader(conf.algorithm, conf.chunkSizeBytes), chunkBytes: conf.chunkSizeBytes }
      this.#params = params
      try {
        const meta = JSON.parse((await this.readFile(METADATA_FILE)).toString('utf8')) as { random?: unknown }
        if (typeof meta.random !== 'string') throw encryptionError(`${this.displayUrl}: ${METADATA_FILE} decrypted but has no "random" field`)
      } catch (error) {
        this.#params = undefined
        if (errorCode(error) === 'E_ENCRYPTION') {
          throw encryptionError(`${this.displayUrl}: the encryption key does not match this remote (${METADATA_FILE} failed authentication); use the key the remote was created with`, error)
        }
        throw error
      }
    })
  }

  async #initialize(): Promise<EncryptionJson> {
    const existing = await this.#inner.list(this.#root, { includeHidden: false }).catch((e: unknown) => {
      if (errorCode(e) === 'ENOENT') return []
      throw e
    })
    if (existing.length > 0) {
      throw encryptionError(`${this.displayUrl} already holds unencrypted data (${existing.length} entries, no ${ENCRYPTION_FILE}): enable encryption on an empty remote`)
    }
    const conf: EncryptionJson = { algorithm: this.#wanted.algorithm, format: FORMAT, chunkSizeBytes: this.#wanted.chunkBytes }
    this.#params = { algorithm: conf.algorithm, key: this.#key, header: makeHeader(conf.algorithm, conf.chunkSizeBytes), chunkBytes: conf.chunkSizeBytes }
    await this.writeFile(METADATA_FILE, JSON.stringify({ random: randomUUID() }))
    // written last: a remote with encryption.json always has its metadata.json
    await this.#inner.writeFile(this.#inPath(ENCRYPTION_FILE), JSON.stringify(conf))
    return conf
  }

  async close(): Promise<void> {
    this.#params = undefined
    await this.#inner.close()
  }

  async createWriteStream(path: string, options: WriteStreamOptions = {}): Promise<Writable> {
    const p = this.#p
    const inPath = this.#inPath(path)
    return this.track('createWriteStream', async () => {
      const expected = options.expectedSizeBytes
      const sealed = expected === undefined ? undefined : HEADER_BYTES + expected + chunkCount(expected, p.chunkBytes) * OVERHEAD_BYTES
      const inner = await this.#inner.createWriteStream(inPath, {
        ...options,
        ...(sealed === undefined ? {} : { expectedSizeBytes: sealed }),
      })
      return new EncryptingWriter(p, inner, (n) => this.countBytes('write', n), options.signal)
    })
  }

  async createReadStream(path: string, options: ReadStreamOptions = {}): Promise<Readable> {
    const p = this.#p
    const inPath = this.#inPath(path)
    const { start, end } = checkRange(options, path)
    return this.track('createReadStream', async () => {
      const s = await this.#inner.stat(inPath)
      if (s.isDirectory) throw new RemoteError('EISDIR', `read "${path}" on ${this.displayUrl}: it is a directory`)
      const head = await this.#readRaw(inPath, 0, HEADER_BYTES - 1)
      const { chunkBytes } = parseHeader(head, path)
      if (!head.equals(p.header)) throw encryptionError(`"${path}" was encrypted with other settings than ${ENCRYPTION_FILE} says`)
      const size = plainSize(s.size, chunkBytes, path)
      const last = Math.min(end ?? size - 1, size - 1)
      const total = chunkCount(size, chunkBytes)
      const sealedChunk = chunkBytes + OVERHEAD_BYTES
      const first = size === 0 ? 0 : Math.min(Math.floor(start / chunkBytes), total - 1)
      const lastChunk = last < start ? first : Math.floor(last / chunkBytes)
      const length = Math.max(0, last - start + 1)
      const raw = await this.#inner.createReadStream(inPath, {
        start: HEADER_BYTES + first * sealedChunk,
        end: Math.min(s.size - 1, HEADER_BYTES + (lastChunk + 1) * sealedChunk - 1),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      })
      const out = new DecryptingTransform(p, path, first, total, start - first * chunkBytes, length)
      raw.on('error', (e) => out.destroy(e))
      out.on('close', () => raw.destroy())
      out.on('end', () => this.countBytes('read', length))
      return raw.pipe(out)
    })
  }

  async #readRaw(path: string, start: number, end: number): Promise<Buffer> {
    const chunks: Buffer[] = []
    for await (const c of (await this.#inner.createReadStream(path, { start, end })) as AsyncIterable<Buffer>) chunks.push(c)
    return Buffer.concat(chunks)
  }

  async readFile(path: string, options: { signal?: AbortSignal } = {}): Promise<Buffer> {
    return this.track('readFile', async () => {
      const chunks: Buffer[] = []
      for await (const c of (await this.createReadStream(path, options)) as AsyncIterable<Buffer>) chunks.push(c)
      return Buffer.concat(chunks)
    })
  }

  async writeFile(path: string, data: Uint8Array | string, options: WriteFileOptions = {}): Promise<void> {
    const buf = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    const out = await this.createWriteStream(path, { ...options, expectedSizeBytes: buf.length })
    await this.track('writeFile', async () => {
      out.end(buf)
      await finished(out)
    })
  }

  async list(path: string, options: ListOptions = {}): Promise<ListEntry[]> {
    const rel = this.resolvePath(path)
    const inPath = this.#inPath(path)
    return this.track('list', async () => {
      const entries = await this.#inner.list(inPath, options)
      return rel === '' ? entries.filter((e) => e.path !== ENCRYPTION_FILE && e.path !== METADATA_FILE) : entries
    })
  }

  async stat(path: string): Promise<RemoteStat> {
    const inPath = this.#inPath(path)
    return this.track('stat', async () => {
      const s = await this.#inner.stat(inPath)
      return s.isDirectory ? s : { ...s, size: plainSize(s.size, this.#p.chunkBytes, path) }
    })
  }

  async rename(from: string, to: string): Promise<void> {
    const a = this.#inPath(from)
    const b = this.#inPath(to)
    await this.track('rename', () => this.#inner.rename(a, b))
  }

  async unlink(path: string): Promise<void> {
    const p = this.#inPath(path)
    await this.track('unlink', () => this.#inner.unlink(p))
  }

  async rmtree(path: string): Promise<void> {
    if (this.resolvePath(path) === '') throw new RemoteError('EACCES', `rmtree refused on ${this.displayUrl}: it would delete the whole remote`)
    const p = this.#inPath(path)
    await this.track('rmtree', () => this.#inner.rmtree(p))
  }

  async mkdir(path: string): Promise<void> {
    const p = this.#inPath(path)
    await this.track('mkdir', () => this.#inner.mkdir(p))
  }
}

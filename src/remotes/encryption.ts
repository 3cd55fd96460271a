/**
 * Client-side encryption of a remote, as Xen Orchestra's @xen-orchestra/fs does it, so XO opens the
 * remotes we encrypt and we open XO's:
 * - the root holds `encryption.json`, plain: `{"algorithm":"chacha20-poly1305"}` (never the key);
 * - and `metadata.json`, encrypted: `{"random":"<uuid>"}`; decrypting it at open() proves the key;
 * - every other file (metadata, cache.json.gz, VhdDirectory blocks, headers, BATs, aliases, merge
 *   state) is encrypted whole (encryption-format.ts): no ranged read or write, so an encrypted remote
 *   holds VhdDirectory backups only (`forcesVhdDirectory`), as XO requires.
 *
 * open() on an empty remote (nothing but hidden entries and those two files) without metadata.json
 * writes both files, as XO does. A key that does not decrypt metadata.json is `E_ENCRYPTION` and nothing
 * is written — unlike XO, even when the remote looks empty (XO then re-keys it): a listing that misses
 * entries must never let a wrong key overwrite metadata.json; to change the key of an empty remote,
 * delete its two files. A remote holding plain data without encryption.json is refused.
 *
 * Remotes an earlier backup-proxy encrypted (`"format": "backup-proxy-chunked-1"`) are read (ranged
 * reads included) but never written: Xen Orchestra cannot read that format (encryption-chunked.ts).
 *
 * EncryptedRemote wraps another Remote; `root` optionally places it in a sub-directory of the inner one.
 */
import { randomUUID } from 'node:crypto'
import type { Readable, Writable } from 'node:stream'
import { BackupProxyError, RemoteError, errorCode } from '../common/errors.js'
import {
  CHUNKED_FORMAT,
  ChunkedDecryptingTransform,
  CHUNK_OVERHEAD_BYTES,
  HEADER_BYTES,
  checkChunkedHeader,
  chunkCount,
  chunkedHeader,
  chunkedKeyBytes,
  chunkedPlainSize,
  type ChunkedParams,
} from './encryption-chunked.js'
import { DEFAULT_ALGORITHM, checkKeyForm, encryptionError, isAlgorithm, openBuffer, plainSize, sealBuffer, sealedSize, xoKeyBytes, type EncryptionAlgorithm } from './encryption-format.js'
import { OpeningTransform, SealingWriter, type CipherParams } from './encryption-streams.js'
import { Remote, type ListEntry, type ListOptions, type ReadRange, type RemoteCapabilities, type RemoteStat, type WriteFileOptions, type WriteStreamOptions, type WriteTarget } from './remote.js'

const ENCRYPTION_FILE = 'encryption.json'
const METADATA_FILE = 'metadata.json'

interface EncryptionOptions {
  /** 32 bytes: Xen Orchestra's encryptionKey, 32 ASCII characters (64 hex digits: old remotes only) */
  key: string
  /** for a new remote; an existing one keeps what its encryption.json says. Default chacha20-poly1305 (XO's) */
  algorithm?: EncryptionAlgorithm
  /** sub-directory of the inner remote the encrypted remote lives in; default its root */
  root?: string
}

type Mode = { format: 'xo'; params: CipherParams } | { format: 'chunked'; params: ChunkedParams }

export function createEncryptedRemote(inner: Remote, options: EncryptionOptions): EncryptedRemote {
  return new EncryptedRemote(inner, options)
}

const ENCRYPTED_CAPABILITIES: RemoteCapabilities = { forcesVhdDirectory: true, releasesChunkOnWriteCallback: false }

export class EncryptedRemote extends Remote {
  readonly kind: Remote['kind']
  readonly displayUrl: string
  readonly #inner: Remote
  readonly #key: string
  readonly #root: string
  readonly #algorithm: EncryptionAlgorithm
  #mode: Mode | undefined

  constructor(inner: Remote, options: EncryptionOptions) {
    super()
    this.#inner = inner
    this.kind = inner.kind
    checkKeyForm(options.key)
    this.#key = options.key
    this.#root = inner.resolvePath(options.root ?? '')
    this.displayUrl = `${inner.displayUrl}${this.#root === '' ? '' : ` [${this.#root}]`} (encrypted)`
    const algorithm = options.algorithm ?? DEFAULT_ALGORITHM
    if (!isAlgorithm(algorithm)) throw encryptionError(`unknown encryption algorithm "${String(algorithm)}": use chacha20-poly1305 or aes-256-gcm`)
    this.#algorithm = algorithm
  }

  /** Whole-file encryption forbids ranged reads: every backup on this remote is a VhdDirectory (as XO). */
  override get capabilities(): RemoteCapabilities {
    return ENCRYPTED_CAPABILITIES
  }

  /** `xo` (Xen Orchestra's format) or `chunked` (an earlier backup-proxy's, read only); after open(). */
  get format(): Mode['format'] {
    return this.#m.format
  }

  /** The inner remote's path of a checked path of this one. */
  #inPath(rel: string): string {
    return this.#root === '' ? rel : rel === '' ? this.#root : `${this.#root}/${rel}`
  }

  get #m(): Mode {
    if (this.#mode === undefined) throw encryptionError(`${this.displayUrl} is not open: call open() first`)
    return this.#mode
  }

  #xo(path: string, op: string): CipherParams {
    const m = this.#m
    if (m.format === 'chunked') {
      throw encryptionError(
        `${op} "${path}" refused on ${this.displayUrl}: this remote uses the encryption format of an earlier backup-proxy, which Xen Orchestra cannot read; it is read only — restore from it and back up to a new encrypted remote`,
      )
    }
    return m.params
  }

  protected async _open(): Promise<void> {
    if (this.#mode !== undefined) return
    await (async () => {
      await this.#inner.open()
      const conf = await this.#readConf()
      if (conf === undefined || conf.algorithm === 'none') {
        if (!(await this.#isEmpty())) {
          throw encryptionError(`${this.displayUrl} already holds unencrypted data (no ${ENCRYPTION_FILE} with an algorithm): enable encryption on an empty remote`)
        }
        return this.#initialize()
      }
      const mode = this.#modeOf(conf)
      try {
        const meta = JSON.parse((await this.#readWith(mode, METADATA_FILE)).toString('utf8')) as unknown
        if (typeof meta !== 'object' || meta === null) throw encryptionError(`${METADATA_FILE} is not a JSON object`)
      } catch (error) {
        const code = errorCode(error)
        if (code === 'ENOENT') {
          if (await this.#isEmpty()) return this.#initialize()
          throw encryptionError(`${this.displayUrl}: ${ENCRYPTION_FILE} exists but ${METADATA_FILE} does not; the remote directory must be empty to be encrypted`, error)
        }
        if (code !== 'E_ENCRYPTION' && !(error instanceof SyntaxError)) throw error
        // unlike XO, never re-keyed here even if the remote looks empty: a listing that misses entries
        // must not let a wrong key overwrite metadata.json
        throw encryptionError(`${this.displayUrl}: the encryption key does not match this remote (${METADATA_FILE} failed authentication); use the key the remote was created with`, error)
      }
      this.#mode = mode
    })()
  }

  async #readConf(): Promise<Record<string, unknown> | undefined> {
    let text: string
    try {
      text = (await this.#inner.readFile(this.#inPath(ENCRYPTION_FILE))).toString('utf8')
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return undefined
      throw error
    }
    try {
      const conf = JSON.parse(text) as unknown
      if (typeof conf === 'object' && conf !== null && !Array.isArray(conf)) return conf as Record<string, unknown>
    } catch {
      // reported below
    }
    throw encryptionError(`${this.displayUrl}: ${ENCRYPTION_FILE} is not a JSON object; it was not written by Xen Orchestra or backup-proxy`)
  }

  #modeOf(conf: Record<string, unknown>): Mode {
    const { algorithm, format, chunkSizeBytes } = conf
    if (!isAlgorithm(algorithm)) throw encryptionError(`${this.displayUrl}: ${ENCRYPTION_FILE} names an unsupported algorithm (${JSON.stringify(algorithm)}); use chacha20-poly1305 or aes-256-gcm remotes`)
    if (format === undefined) return { format: 'xo', params: { algorithm, key: xoKeyBytes(this.#key) } }
    if (format === CHUNKED_FORMAT && typeof chunkSizeBytes === 'number' && Number.isSafeInteger(chunkSizeBytes) && chunkSizeBytes > 0) {
      return { format: 'chunked', params: { algorithm, key: chunkedKeyBytes(this.#key), header: chunkedHeader(algorithm, chunkSizeBytes), chunkBytes: chunkSizeBytes } }
    }
    throw encryptionError(`${this.displayUrl}: ${ENCRYPTION_FILE} describes an unsupported encryption format (${JSON.stringify(format)}); upgrade backup-proxy`)
  }

  /** True when the root holds nothing but hidden entries and the two encryption files (XO's rule). */
  async #isEmpty(): Promise<boolean> {
    const entries = await this.#inner.list(this.#root, { includeHidden: false }).catch((e: unknown) => {
      if (errorCode(e) === 'ENOENT') return []
      throw e
    })
    return entries.every((e) => e.path === ENCRYPTION_FILE || e.path === METADATA_FILE)
  }

  async #initialize(): Promise<void> {
    const mode: Mode = { format: 'xo', params: { algorithm: this.#algorithm, key: xoKeyBytes(this.#key) } }
    await this.#inner.writeFile(this.#inPath(METADATA_FILE), sealBuffer(mode.params.algorithm, mode.params.key, Buffer.from(`{"random":"${randomUUID()}"}`)))
    // written last: a remote with encryption.json always has its metadata.json
    await this.#inner.writeFile(this.#inPath(ENCRYPTION_FILE), JSON.stringify({ algorithm: mode.params.algorithm }))
    this.#mode = mode
  }

  protected async _close(): Promise<void> {
    this.#mode = undefined
    await this.#inner.close()
  }

  protected async _createWriteStream(target: WriteTarget, options: WriteStreamOptions): Promise<Writable> {
    const p = this.#xo(target.path, 'write')
    const expected = options.expectedSizeBytes
    const inner = await this.#inner.createWriteStream(this.#inPath(target.path), { ...options, ...(expected === undefined ? {} : { expectedSizeBytes: sealedSize(expected) }) })
    return new SealingWriter(p, inner, (n) => this.countBytes('write', n), options.signal)
  }

  protected override async _writeFile(rel: string, plain: Uint8Array, options: WriteFileOptions): Promise<void> {
    const p = this.#xo(rel, 'write')
    await this.#inner.writeFile(this.#inPath(rel), sealBuffer(p.algorithm, p.key, plain), options)
    this.countBytes('write', plain.length)
  }

  protected async _createReadStream(rel: string, range: ReadRange): Promise<Readable> {
    const m = this.#m
    const inPath = this.#inPath(rel)
    const { start, end, signal } = range
    if (m.format === 'chunked') return this.#readChunked(m.params, rel, inPath, start, end, signal)
    if (start !== 0 || end !== undefined) {
      throw new BackupProxyError('E_ENCRYPTED_RANGE', `ranged read of "${rel}" refused on ${this.displayUrl}: encrypted files are read whole (as Xen Orchestra); backups on an encrypted remote must be VhdDirectory`, {
        fields: { path: rel },
      })
    }
    const raw = await this.#inner.createReadStream(inPath, signal === undefined ? {} : { signal })
    const out = new OpeningTransform(m.params, rel)
    raw.on('error', (e) => out.destroy(e))
    out.on('close', () => raw.destroy())
    out.on('end', () => this.countBytes('read', out.plainBytes))
    return raw.pipe(out)
  }

  protected override async _readFile(rel: string, signal: AbortSignal | undefined): Promise<Buffer> {
    return this.#readWith(this.#m, rel, signal)
  }

  async #readWith(mode: Mode, path: string, signal?: AbortSignal): Promise<Buffer> {
    const inPath = this.#inPath(path)
    if (mode.format === 'xo') {
      const plain = openBuffer(mode.params.algorithm, mode.params.key, await this.#inner.readFile(inPath, signal === undefined ? {} : { signal }), path)
      this.countBytes('read', plain.length)
      return plain
    }
    const chunks: Buffer[] = []
    for await (const c of (await this.#readChunked(mode.params, path, inPath, 0, undefined, signal)) as AsyncIterable<Buffer>) chunks.push(c)
    return Buffer.concat(chunks)
  }

  async #readChunked(p: ChunkedParams, path: string, inPath: string, start: number, end: number | undefined, signal?: AbortSignal): Promise<Readable> {
    const s = await this.#inner.stat(inPath)
    if (s.isDirectory) throw new RemoteError('EISDIR', `read "${path}" on ${this.displayUrl}: it is a directory`)
    const headChunks: Buffer[] = []
    for await (const c of (await this.#inner.createReadStream(inPath, { start: 0, end: HEADER_BYTES - 1 })) as AsyncIterable<Buffer>) headChunks.push(c)
    checkChunkedHeader(Buffer.concat(headChunks), p, path)
    const size = chunkedPlainSize(s.size, p.chunkBytes, path)
    const last = Math.min(end ?? size - 1, size - 1)
    const total = chunkCount(size, p.chunkBytes)
    const sealedChunk = p.chunkBytes + CHUNK_OVERHEAD_BYTES
    const first = size === 0 ? 0 : Math.min(Math.floor(start / p.chunkBytes), total - 1)
    const lastChunk = last < start ? first : Math.floor(last / p.chunkBytes)
    const length = Math.max(0, last - start + 1)
    const raw = await this.#inner.createReadStream(inPath, {
      start: HEADER_BYTES + first * sealedChunk,
      end: Math.min(s.size - 1, HEADER_BYTES + (lastChunk + 1) * sealedChunk - 1),
      ...(signal === undefined ? {} : { signal }),
    })
    const out = new ChunkedDecryptingTransform(p, path, first, total, start - first * p.chunkBytes, length)
    raw.on('error', (e) => out.destroy(e))
    out.on('close', () => raw.destroy())
    out.on('end', () => this.countBytes('read', length))
    return raw.pipe(out)
  }

  protected async _list(rel: string, options: ListOptions): Promise<ListEntry[]> {
    const entries = await this.#inner.list(this.#inPath(rel), options)
    return rel === '' ? entries.filter((e) => e.path !== ENCRYPTION_FILE && e.path !== METADATA_FILE) : entries
  }

  protected async _stat(rel: string): Promise<RemoteStat> {
    const m = this.#m
    const s = await this.#inner.stat(this.#inPath(rel))
    if (s.isDirectory) return s
    return { ...s, size: m.format === 'xo' ? plainSize(s.size, rel) : chunkedPlainSize(s.size, m.params.chunkBytes, rel) }
  }

  protected async _rename(from: string, to: string): Promise<void> {
    await this.#inner.rename(this.#inPath(from), this.#inPath(to))
  }

  protected async _unlink(rel: string): Promise<void> {
    await this.#inner.unlink(this.#inPath(rel))
  }

  protected async _rmtree(rel: string): Promise<void> {
    await this.#inner.rmtree(this.#inPath(rel))
  }

  protected async _mkdir(rel: string): Promise<void> {
    await this.#inner.mkdir(this.#inPath(rel))
  }
}

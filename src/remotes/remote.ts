/**
 * The remote contract: one abstract base class for every kind of backup storage (local, NFS, SMB, S3:
 * one file each, plus the EncryptedRemote wrapper), modelled on Xen Orchestra's fs handlers
 * (@xen-orchestra/fs abstract.js): the public methods here do the shared work once — path checks, the
 * remote root refused where a file is needed (EISDIR), an aborted signal refused up front, `op` events,
 * temporary names, writeFile through a write stream, error mapping — then call the transport's
 * primitive (`_stat`, `_list`, `_createWriteStream`, ...), which receives a checked, normalized path.
 * The same backup code and the same conformance suite (test/remotes/conformance.ts) run against all.
 *
 * Paths are remote-relative, `/`-separated (`xo-vm-backups/<vm>/x.json`); `resolvePath` refuses `..`,
 * absolute paths and NUL bytes with an `EACCES` RemoteError before any I/O. Errors are RemoteError with
 * a POSIX code (`ENOENT`, `EEXIST`, `ENOTEMPTY`, `EACCES`, ...) whatever the backend said; the backend's
 * own status goes in `fields.detail`.
 *
 * Writes are atomic: `createWriteStream` writes to a temporary name (`.<name>.<random>.tmp` beside the
 * final one, or a pending multipart upload on S3) and publishes on `end()` — 'finish' is emitted only
 * once the final name is visible. `destroy(err)` or an aborted signal removes the temporary. Nothing
 * partial is ever visible under the final name.
 *
 * Remotes emit `op` and `bytes` events (see RemoteEvents) that the metrics layer turns into counters;
 * no prom-client import lives here. What a remote can do is in `capabilities`, never in its class.
 */
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { posix } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { BackupProxyError, RemoteError } from '../common/errors.js'
import { CheckedRemoteFile, StreamedRemoteFile } from './remote-file.js'
import { byPath, isHidden, isTemporaryName, temporaryName } from './remote-names.js'
import { probeRemote } from './remote-probe.js'
import { checkRange, toRemoteError } from './remote-errors.js'
import type {
  ListEntry,
  ListOptions,
  ReadFileOptions,
  ReadStreamOptions,
  RemoteCapabilities,
  RemoteEvents,
  RemoteFile,
  RemoteKind,
  RemoteStat,
  RemoteTestResult,
  WriteFileOptions,
  WriteStreamOptions,
} from './remote-types.js'

export type * from './remote-types.js'
export { isTemporaryName, temporaryName } from './remote-names.js'

/** Where a write stream writes: the checked final path and a fresh temporary name beside it. */
export interface WriteTarget {
  /** normalized remote-relative path, never '' */
  path: string
  /** `.<name>.<random>.tmp` beside it (transports without temporaries, S3, ignore it) */
  temporary: string
}

/** A read range, checked: `end` inclusive, undefined for "to the end". */
export interface ReadRange {
  start: number
  end: number | undefined
  signal?: AbortSignal
}

const DEFAULT_CAPABILITIES: RemoteCapabilities = { forcesVhdDirectory: false, releasesChunkOnWriteCallback: false }

function isAbort(error: unknown): boolean {
  return (error as { name?: unknown }).name === 'AbortError'
}

export abstract class Remote extends EventEmitter<RemoteEvents> {
  abstract readonly kind: RemoteKind
  /** the remote's URL with its password replaced by `***` (safe for logs and errors) */
  abstract readonly displayUrl: string

  /** What this remote can do (see RemoteCapabilities); transports override what differs from the defaults. */
  get capabilities(): RemoteCapabilities {
    return DEFAULT_CAPABILITIES
  }

  /** `capabilities.forcesVhdDirectory` (Xen Orchestra's handler.useVhdDirectory()). */
  get forcesVhdDirectory(): boolean {
    return this.capabilities.forcesVhdDirectory
  }

  // ------------------------------------------------------------ primitives (one set per transport)

  /** Connects / mounts / checks the root exists. Idempotent. */
  protected abstract _open(): Promise<void>
  /** Releases connections; pending operations fail. Idempotent. */
  protected abstract _close(): Promise<void>
  /** A write stream to `target.temporary` (or a pending upload) that publishes `target.path` on end(). */
  protected abstract _createWriteStream(target: WriteTarget, options: WriteStreamOptions): Promise<Writable>
  protected abstract _createReadStream(path: string, range: ReadRange): Promise<Readable>
  /** Entries below `path`, in any order; hidden ones may be included (the base filters and sorts). */
  protected abstract _list(path: string, options: ListOptions): Promise<ListEntry[]>
  protected abstract _stat(path: string): Promise<RemoteStat>
  protected abstract _rename(from: string, to: string): Promise<void>
  protected abstract _unlink(path: string): Promise<void>
  /** `path` is never the root. */
  protected abstract _rmtree(path: string): Promise<void>
  protected abstract _mkdir(path: string): Promise<void>

  /** Reads a whole file; default: the read stream, concatenated. */
  /** `into` (ReadFileOptions): a transport that can read straight into the caller's buffer uses it; the default cannot */
  protected async _readFile(path: string, signal: AbortSignal | undefined, _into?: ReadFileOptions['into']): Promise<Buffer> {
    const input = await this._createReadStream(path, { start: 0, end: undefined, ...(signal === undefined ? {} : { signal }) })
    const chunks: Buffer[] = []
    for await (const c of input as AsyncIterable<Buffer>) chunks.push(c)
    return chunks.length === 1 && chunks[0] !== undefined ? chunks[0] : Buffer.concat(chunks)
  }

  /** A file opened for positioned reads; default: its size by `_stat`, each read a ranged read stream. */
  protected async _openFile(path: string): Promise<RemoteFile> {
    const s = await this._stat(path)
    if (s.isDirectory) throw new RemoteError('EISDIR', `read "${path}" on ${this.displayUrl}: it is a directory`)
    return new StreamedRemoteFile(s.size, (start, end, signal) => this._createReadStream(path, { start, end, ...(signal === undefined ? {} : { signal }) }))
  }

  /** Writes a whole file atomically; default: through a write stream. */
  protected async _writeFile(path: string, data: Uint8Array, options: WriteFileOptions): Promise<void> {
    const out = await this._createWriteStream(this.#target(path), options)
    out.end(data)
    await finished(out)
  }

  /** Removes `path` if it is an empty directory; default: list, then rmtree (a concurrent writer could race). */
  protected async _removeEmptyDir(path: string): Promise<boolean> {
    let entries: ListEntry[]
    try {
      entries = await this._list(path, { includeHidden: true })
    } catch (error) {
      const code = (error as { code?: unknown }).code
      if (code === 'ENOENT' || code === 'ENOTDIR') return false
      throw error
    }
    if (entries.length > 0) return false
    await this._rmtree(path)
    return true
  }

  /**
   * Turns a primitive's failure into one of ours (a RemoteError with a POSIX code); errors that already
   * are ours, and aborts, pass unchanged. Transports with their own status codes override it.
   */
  protected mapError(error: unknown, op: string, path: string): Error {
    return toRemoteError(error, op, path, this.displayUrl)
  }

  // ------------------------------------------------------------ the contract (shared work, then the primitive)

  async open(): Promise<void> {
    await this.#run('open', 'open', '/', () => this._open())
  }

  async close(): Promise<void> {
    await this._close()
  }

  /** Atomic write: see the header. Parent directories are created. */
  async createWriteStream(path: string, options: WriteStreamOptions = {}): Promise<Writable> {
    const rel = this.#file(path, 'createWriteStream')
    return this.#run('createWriteStream', 'write', rel, () => {
      options.signal?.throwIfAborted()
      return this._createWriteStream(this.#target(rel), options)
    })
  }

  async createReadStream(path: string, options: ReadStreamOptions = {}): Promise<Readable> {
    const rel = this.resolvePath(path)
    const { start, end } = checkRange(options, rel)
    const signal = options.signal
    return this.#run('createReadStream', 'read', rel, () => {
      signal?.throwIfAborted()
      return this._createReadStream(rel, { start, end, ...(signal === undefined ? {} : { signal }) })
    })
  }

  /**
   * Opens a file for positioned reads (RemoteFile: `read(buffer, offset, length, position)`, `close()`):
   * one open for many reads where a read stream per range would open the file each time.
   */
  async openFile(path: string, options: { signal?: AbortSignal } = {}): Promise<RemoteFile> {
    const rel = this.#file(path, 'openFile')
    const file = await this.#run('openFile', 'read', rel, () => {
      options.signal?.throwIfAborted()
      return this._openFile(rel)
    })
    return new CheckedRemoteFile(file, rel, (error) => (error instanceof BackupProxyError || isAbort(error) ? error : this.mapError(error, 'read', rel)))
  }

  /**
   * A whole file. With `into`, a transport that can (local) reads it into the buffer `into(size)` returns
   * (at least `size` bytes; undefined: a buffer of its own) and returns a view of it: no fresh
   * allocation per file for a caller that reuses its buffers (a restore reads a file per block).
   */
  async readFile(path: string, options: ReadFileOptions = {}): Promise<Buffer> {
    const rel = this.resolvePath(path)
    return this.#run('readFile', 'readFile', rel, () => {
      options.signal?.throwIfAborted()
      return this._readFile(rel, options.signal, options.into)
    })
  }

  /** Atomic, like createWriteStream. */
  async writeFile(path: string, data: Uint8Array | string, options: WriteFileOptions = {}): Promise<void> {
    const rel = this.#file(path, 'writeFile')
    await this.#run('writeFile', 'write', rel, () => {
      options.signal?.throwIfAborted()
      return this._writeFile(rel, typeof data === 'string' ? Buffer.from(data) : data, options)
    })
  }

  /**
   * Copies file `from` of `source` to `path` of this remote without its bytes passing through the process
   * (two local remotes: the kernel copies), atomic as createWriteStream (temporary, size checked against
   * the source's, then published): true once `path` is published. False, with nothing done, when this
   * transport cannot for that source (the default): the caller then streams.
   */
  async copyFrom(source: Remote, from: string, path: string, options: WriteStreamOptions = {}): Promise<boolean> {
    const src = source.resolvePath(from)
    const rel = this.#file(path, 'copyFrom')
    return this.#run('copyFrom', 'write', rel, () => {
      options.signal?.throwIfAborted()
      return this._copyFrom(source, src, this.#target(rel), options)
    })
  }

  /** copyFrom's primitive, `from` checked on `source`; default: not possible (false). */
  protected _copyFrom(_source: Remote, _from: string, _target: WriteTarget, _options: WriteStreamOptions): Promise<boolean> {
    return Promise.resolve(false)
  }

  /** Entries of a directory; ENOENT when it does not exist. Order is by path; hidden entries only when asked. */
  async list(path: string, options: ListOptions = {}): Promise<ListEntry[]> {
    const rel = this.resolvePath(path)
    return this.#run('list', 'list', rel, async () => {
      const entries = await this._list(rel, options)
      return (options.includeHidden === true ? entries : entries.filter((e) => !isHidden(e.path))).sort(byPath)
    })
  }

  async stat(path: string): Promise<RemoteStat> {
    const rel = this.resolvePath(path)
    return this.#run('stat', 'stat', rel, () => this._stat(rel))
  }

  /** Renames a file (replacing the target); on S3 copy+delete, so writers never rely on it to publish. */
  async rename(from: string, to: string): Promise<void> {
    const a = this.resolvePath(from)
    const b = this.resolvePath(to)
    await this.#run('rename', 'rename', `${a} -> ${b}`, () => this._rename(a, b))
  }

  /** Removes a file; ENOENT when absent. */
  async unlink(path: string): Promise<void> {
    const rel = this.resolvePath(path)
    if (rel === '') throw new RemoteError('EISDIR', `unlink refused on ${this.displayUrl}: it is the remote root`)
    await this.#run('unlink', 'unlink', rel, () => this._unlink(rel))
  }

  /** Removes a directory and everything below it; no error when absent. */
  async rmtree(path: string): Promise<void> {
    const rel = this.resolvePath(path)
    if (rel === '') throw new RemoteError('EACCES', `rmtree refused on ${this.displayUrl}: it would delete the whole remote`)
    await this.#run('rmtree', 'rmtree', rel, () => this._rmtree(rel))
  }

  /** mkdir -p */
  async mkdir(path: string): Promise<void> {
    const rel = this.resolvePath(path)
    await this.#run('mkdir', 'mkdir', rel, () => this._mkdir(rel))
  }

  /**
   * Removes `path` when it is an empty directory (true), else leaves it (false; also when absent). On
   * backends without real directories (S3) an empty prefix has nothing to remove.
   */
  async removeEmptyDir(path: string): Promise<boolean> {
    const rel = this.resolvePath(path)
    if (rel === '') return false
    return this.#run('removeEmptyDir', 'removeEmptyDir', rel, () => this._removeEmptyDir(rel))
  }

  /** Whether a file or directory exists. */
  async exists(path: string): Promise<boolean> {
    try {
      await this.stat(path)
      return true
    } catch (error) {
      if (error instanceof RemoteError && error.code === 'ENOENT') return false
      throw error
    }
  }

  /**
   * Validates and normalizes a remote-relative path. Refuses `..`, absolute paths and NUL bytes with
   * EACCES before any I/O. Returns the normalized relative path ('' for the root).
   */
  resolvePath(path: string): string {
    if (typeof path !== 'string' || path.includes('\0')) {
      throw new RemoteError('EACCES', `path refused on ${this.displayUrl}: it contains a NUL byte`, { fields: { path: String(path).replaceAll('\0', '\\0') } })
    }
    if (path.startsWith('/') || path.startsWith('\\') || /^[A-Za-z]:/.test(path)) {
      throw new RemoteError('EACCES', `path refused on ${this.displayUrl}: "${path}" is absolute; paths are relative to the remote root`, { fields: { path } })
    }
    const parts = path.split(/[/\\]/)
    if (parts.includes('..')) {
      throw new RemoteError('EACCES', `path refused on ${this.displayUrl}: "${path}" leaves the remote root (..)`, { fields: { path } })
    }
    return parts.filter((p) => p !== '' && p !== '.').join('/')
  }

  /**
   * Probes the remote: writes a `sizeBytes` file of random data (through createWriteStream, so the
   * atomic path is what is measured), reads it back and compares, stats it (latency), deletes it.
   * The probe is a temporary name, so a crash leaves something `removeTemporaries` cleans.
   */
  async test(options: { sizeBytes?: number; signal?: AbortSignal } = {}): Promise<RemoteTestResult> {
    const sizeBytes = options.sizeBytes ?? 16 * 1024 * 1024
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 1) throw new RemoteError('EINVAL', `test(): sizeBytes must be a positive integer, got ${sizeBytes}`)
    const path = temporaryName('backup-proxy-probe', randomBytes(6).toString('hex'))
    return this.track('test', () => probeRemote(this, path, sizeBytes, options.signal))
  }

  /**
   * Removes the temporaries (`.<name>.<random>.tmp`) a killed writer left anywhere below `dir`, and
   * returns how many were removed. Only call it when no writer is active on that directory.
   */
  async removeTemporaries(dir: string): Promise<number> {
    return this.track('removeTemporaries', async () => {
      let entries: ListEntry[]
      try {
        entries = await this.list(dir, { recursive: true, includeHidden: true })
      } catch (error) {
        if (error instanceof RemoteError && error.code === 'ENOENT') return 0
        throw error
      }
      const base = this.resolvePath(dir)
      let removed = 0
      for (const entry of entries) {
        if (entry.isDirectory || !isTemporaryName(posix.basename(entry.path))) continue
        try {
          await this.unlink(base === '' ? entry.path : `${base}/${entry.path}`)
          removed++
        } catch (error) {
          if (!(error instanceof RemoteError && error.code === 'ENOENT')) throw error
        }
      }
      return removed
    })
  }

  // ------------------------------------------------------------ helpers for transports

  /** Emits a `bytes` event (for metrics). */
  protected countBytes(direction: 'read' | 'write', bytes: number): void {
    if (bytes > 0) this.emit('bytes', { direction, bytes })
  }

  /**
   * Destroys `stream` when `signal` aborts, and forgets the listener once the stream closes, so a
   * long-lived signal (a job's) does not collect one listener per read.
   */
  protected bindSignal(stream: Readable, signal: AbortSignal | undefined): void {
    if (signal === undefined) return
    const onAbort = (): void => {
      stream.destroy(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)))
    }
    signal.addEventListener('abort', onAbort, { once: true })
    stream.once('close', () => signal.removeEventListener('abort', onAbort))
  }

  /** Times an operation and emits an `op` event for metrics. */
  protected async track<T>(op: string, fn: () => Promise<T>): Promise<T> {
    const start = performance.now()
    try {
      const result = await fn()
      this.emit('op', { op, durationMs: performance.now() - start, ok: true })
      return result
    } catch (error) {
      const code = (error as { code?: unknown }).code
      this.emit('op', { op, durationMs: performance.now() - start, ok: false, ...(typeof code === 'string' ? { code } : {}) })
      throw error
    }
  }

  /** Runs a primitive as operation `op`: tracked, its failure mapped (errors name it `errorOp` on `path`). */
  async #run<T>(op: string, errorOp: string, path: string, fn: () => Promise<T>): Promise<T> {
    return this.track(op, async () => {
      try {
        return await fn()
      } catch (error) {
        if (error instanceof BackupProxyError || isAbort(error)) throw error
        throw this.mapError(error, errorOp, path)
      }
    })
  }

  /** A checked path that must name a file (the root is refused with EISDIR). */
  #file(path: string, op: string): string {
    const rel = this.resolvePath(path)
    if (rel === '') throw new RemoteError('EISDIR', `${op}: a file path is required, got the remote root of ${this.displayUrl}`)
    return rel
  }

  #target(rel: string): WriteTarget {
    return { path: rel, temporary: temporaryName(rel, randomBytes(6).toString('hex')) }
  }
}

/** Whether backups to `remote` are VhdDirectory: asked for in its options, or forced by the remote (as XO). */
export function useVhdDirectory(remote: Remote, options: { useVhdDirectory?: boolean }): boolean {
  return options.useVhdDirectory === true || remote.capabilities.forcesVhdDirectory
}

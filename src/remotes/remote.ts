/**
 * The remote contract: one abstract class that every kind of backup storage implements (local, NFS,
 * SMB, S3: one file each), modelled on Xen Orchestra's fs handlers so the same backup code and the
 * same conformance suite (test/remotes/conformance.ts) run against all of them.
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
 * no prom-client import lives here.
 */
import { createHash, randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { posix } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { RemoteError } from '../common/errors.js'

export type RemoteKind = 'file' | 'nfs' | 'smb' | 's3'

export interface RemoteStat {
  /** size in bytes (0 for directories) */
  size: number
  isDirectory: boolean
  /** last modification, ms since epoch (0 when the backend has none) */
  mtimeMs: number
}

export interface ListOptions {
  /** list every file below, with paths relative to the listed directory */
  recursive?: boolean
  /** include entries whose name starts with `.` (temporaries); default false */
  includeHidden?: boolean
}

export interface ListEntry {
  /** path relative to the listed directory (just the name when not recursive) */
  path: string
  isDirectory: boolean
}

export interface WriteStreamOptions {
  /** expected final size when known: S3 picks its part size from it */
  expectedSizeBytes?: number
  /** refuse (EEXIST) when the final name exists; default false (replace) */
  exclusive?: boolean
  signal?: AbortSignal
}

export interface ReadStreamOptions {
  /** first byte, default 0 */
  start?: number
  /** last byte, inclusive (as node:fs); default end of file */
  end?: number
  signal?: AbortSignal
}

export interface WriteFileOptions {
  exclusive?: boolean
  signal?: AbortSignal
}

export interface RemoteTestResult {
  /** size of the probe file */
  sizeBytes: number
  writeDurationMs: number
  readDurationMs: number
  writeMiBps: number
  readMiBps: number
  /** round trip of a small operation (stat) */
  latencyMs: number
}

export interface RemoteOpEvent {
  op: string
  durationMs: number
  ok: boolean
  /** error code when !ok */
  code?: string
}

export interface RemoteBytesEvent {
  direction: 'read' | 'write'
  bytes: number
}

export interface RemoteEvents {
  op: [RemoteOpEvent]
  bytes: [RemoteBytesEvent]
}

/** Name of the temporary a writer uses for `path` (hidden, unique per attempt). */
export function temporaryName(path: string, suffix: string): string {
  const dir = posix.dirname(path)
  const base = posix.basename(path)
  const tmp = `.${base}.${suffix}.tmp`
  return dir === '.' ? tmp : `${dir}/${tmp}`
}

/** True for names writers use as temporaries (cleaned up by `removeTemporaries`). */
export function isTemporaryName(name: string): boolean {
  return name.startsWith('.') && name.endsWith('.tmp')
}

export abstract class Remote extends EventEmitter<RemoteEvents> {
  abstract readonly kind: RemoteKind
  /** the remote's URL with its password replaced by `***` (safe for logs and errors) */
  abstract readonly displayUrl: string

  /**
   * True when this remote can hold only VhdDirectory backups, whatever the job's useVhdDirectory says
   * (Xen Orchestra's handler.useVhdDirectory() answering true): an encrypted remote reads files whole.
   */
  get forcesVhdDirectory(): boolean {
    return false
  }

  /** Connects / mounts / checks the root exists. Idempotent. */
  abstract open(): Promise<void>
  /** Releases connections; pending operations fail. Idempotent. */
  abstract close(): Promise<void>

  /** Atomic write: see the header. Parent directories are created. */
  abstract createWriteStream(path: string, options?: WriteStreamOptions): Promise<Writable>
  abstract createReadStream(path: string, options?: ReadStreamOptions): Promise<Readable>
  abstract readFile(path: string, options?: { signal?: AbortSignal }): Promise<Buffer>
  /** Atomic, like createWriteStream. */
  abstract writeFile(path: string, data: Uint8Array | string, options?: WriteFileOptions): Promise<void>
  /** Entries of a directory; ENOENT when it does not exist. Order is by path. */
  abstract list(path: string, options?: ListOptions): Promise<ListEntry[]>
  abstract stat(path: string): Promise<RemoteStat>
  /** Renames a file (replacing the target); on S3 copy+delete, so writers never rely on it to publish. */
  abstract rename(from: string, to: string): Promise<void>
  /** Removes a file; ENOENT when absent. */
  abstract unlink(path: string): Promise<void>
  /** Removes a directory and everything below it; no error when absent. */
  abstract rmtree(path: string): Promise<void>
  /** mkdir -p */
  abstract mkdir(path: string): Promise<void>

  /**
   * Removes `path` when it is an empty directory (true), else leaves it (false; also when absent). On
   * backends without real directories (S3) an empty prefix has nothing to remove. Local overrides it with
   * an atomic rmdir; the default lists then removes, which a concurrent writer could race.
   */
  async removeEmptyDir(path: string): Promise<boolean> {
    let entries: ListEntry[]
    try {
      entries = await this.list(path, { includeHidden: true })
    } catch (error) {
      if ((error as { code?: unknown }).code === 'ENOENT' || (error as { code?: unknown }).code === 'ENOTDIR') return false
      throw error
    }
    if (entries.length > 0) return false
    await this.rmtree(path)
    return true
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
    const signal = options.signal
    return this.track('test', async () => {
      const path = temporaryName('backup-proxy-probe', randomBytes(6).toString('hex'))
      const chunk = randomBytes(Math.min(sizeBytes, 1024 * 1024))
      const written = createHash('sha256')
      try {
        const t0 = performance.now()
        const out = await this.createWriteStream(path, { expectedSizeBytes: sizeBytes, ...(signal === undefined ? {} : { signal }) })
        for (let left = sizeBytes; left > 0; ) {
          const part = left >= chunk.length ? chunk : chunk.subarray(0, left)
          written.update(part)
          left -= part.length
          if (!out.write(part)) await new Promise<void>((resolve, reject) => {
            const onError = (e: Error) => reject(e)
            out.once('error', onError)
            out.once('drain', () => {
              out.off('error', onError)
              resolve()
            })
          })
        }
        out.end()
        await finished(out)
        const writeDurationMs = performance.now() - t0
        const t1 = performance.now()
        const read = createHash('sha256')
        let readBytes = 0
        const input = await this.createReadStream(path, signal === undefined ? {} : { signal })
        for await (const data of input as AsyncIterable<Buffer>) {
          read.update(data)
          readBytes += data.length
        }
        const readDurationMs = performance.now() - t1
        if (readBytes !== sizeBytes || !read.digest().equals(written.digest())) {
          throw new RemoteError('EIO', `test(): ${this.displayUrl} returned different data than was written (${readBytes} of ${sizeBytes} bytes read): the storage is corrupting data`)
        }
        const t2 = performance.now()
        await this.stat(path)
        const latencyMs = performance.now() - t2
        await this.unlink(path)
        const mib = sizeBytes / (1024 * 1024)
        return {
          sizeBytes,
          writeDurationMs,
          readDurationMs,
          writeMiBps: mib / (writeDurationMs / 1000),
          readMiBps: mib / (readDurationMs / 1000),
          latencyMs,
        }
      } catch (error) {
        // best effort: the probe may not exist (failed before publish); the original error is what matters
        await this.unlink(path).catch(() => undefined)
        throw error
      }
    })
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

  /** Emits a `bytes` event (for metrics). */
  protected countBytes(direction: 'read' | 'write', bytes: number): void {
    if (bytes > 0) this.emit('bytes', { direction, bytes })
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
}

/** Whether backups to `remote` are VhdDirectory: asked for in its options, or forced by the remote (as XO). */
export function useVhdDirectory(remote: Remote, options: { useVhdDirectory?: boolean }): boolean {
  return options.useVhdDirectory === true || remote.forcesVhdDirectory
}

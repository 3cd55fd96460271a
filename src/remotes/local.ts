/**
 * Local remote: a directory of this host (`file:///path`), on node:fs. Writes go through
 * LocalWriteStream (temporary + fsync + rename). The root must exist: a missing mount point must fail
 * loudly instead of silently filling the system disk. Reads (read streams, openFile, readFile, stat,
 * list) never follow a symlink out of the root: the path is resolved (realpath) and must stay under the
 * resolved root, or the read fails with EACCES; links inside the root work. Only the node:fs primitives live here; the
 * shared work (path checks, tracking, error mapping) is the Remote base class's.
 */
import { createReadStream } from 'node:fs'
import { mkdir, open, readdir, readFile, realpath, rename, rm, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises'
import { dirname, join, sep } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { RemoteError } from '../common/errors.js'
import { copyLocalFile } from './local-copy.js'
import { LocalWriteStream } from './local-writer.js'
import { Remote, type ListEntry, type ListOptions, type ReadRange, type ReadFileOptions, type RemoteCapabilities, type RemoteFile, type RemoteStat, type WriteStreamOptions, type WriteTarget } from './remote.js'
import { toRemoteError } from './remote-errors.js'
import type { FileRemoteUrl, RemoteOptions } from './url-types.js'
import { redactRemoteUrl } from './url.js'

const LOCAL_CAPABILITIES: RemoteCapabilities = { forcesVhdDirectory: false, releasesChunkOnWriteCallback: true }

export class LocalRemote extends Remote {
  readonly kind = 'file' as const
  readonly displayUrl: string
  readonly root: string
  #rootReal: Promise<string> | undefined

  /** node:fs is done with a chunk once its write callback fired */
  override get capabilities(): RemoteCapabilities {
    return LOCAL_CAPABILITIES
  }

  constructor(url: FileRemoteUrl, _options: RemoteOptions = {}) {
    super()
    if (!url.path.startsWith('/')) throw new RemoteError('EINVAL', `local remote: the path "${url.path}" must be absolute`)
    this.root = url.path
    this.displayUrl = redactRemoteUrl(url)
  }

  #abs(rel: string): string {
    return rel === '' ? this.root : join(this.root, rel)
  }

  /**
   * `abs` with every symlink resolved, refused (EACCES) when it leads out of the root. Reads then open
   * the resolved path itself, not the link.
   */
  async #inside(op: string, rel: string): Promise<string> {
    // the root's own resolution is kept (one realpath per read, not two: a restore reads a file per block)
    this.#rootReal ??= realpath(this.root)
    const rootReal = await this.#rootReal.catch((e: unknown) => {
      this.#rootReal = undefined
      return this.#err(op, '/')(e)
    })
    const real = await realpath(this.#abs(rel)).catch(this.#err(op, rel))
    if (real !== rootReal && !real.startsWith(rootReal.endsWith(sep) ? rootReal : rootReal + sep)) {
      throw new RemoteError('EACCES', `${op} "${rel}" on ${this.displayUrl}: the path is a symbolic link out of the remote root; refusing to follow it`)
    }
    return real
  }

  #err(op: string, path: string): (e: unknown) => never {
    return (e: unknown) => {
      throw toRemoteError(e, op, path, this.displayUrl)
    }
  }

  protected async _open(): Promise<void> {
    const s = await stat(this.root)
    if (!s.isDirectory()) throw new RemoteError('ENOTDIR', `${this.displayUrl}: the remote root is not a directory`)
  }

  protected async _close(): Promise<void> {
    await Promise.resolve()
  }

  protected async _createWriteStream(target: WriteTarget, options: WriteStreamOptions): Promise<Writable> {
    await Promise.resolve()
    return new LocalWriteStream({
      finalPath: this.#abs(target.path),
      tmpPath: this.#abs(target.temporary),
      exclusive: options.exclusive === true,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      onBytes: (n) => this.countBytes('write', n),
      mapError: (e) => toRemoteError(e, 'write', target.path, this.displayUrl),
    })
  }

  /** Another local remote's file copied by the kernel (local-copy.ts); any other remote: false. */
  protected override async _copyFrom(source: Remote, from: string, target: WriteTarget, options: WriteStreamOptions): Promise<boolean> {
    if (!(source instanceof LocalRemote)) return false
    const bytes = await copyLocalFile({
      from: await source.#inside('read', from),
      tmpPath: this.#abs(target.temporary),
      finalPath: this.#abs(target.path),
      exclusive: options.exclusive === true,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    })
    source.countBytes('read', bytes)
    this.countBytes('write', bytes)
    return true
  }

  /** A file of the root opened for reading (symlinks checked), with its size; EISDIR for a directory. */
  async #openForRead(rel: string): Promise<{ fh: FileHandle; size: number }> {
    const fh = await open(await this.#inside('read', rel), 'r')
    try {
      const s = await fh.stat()
      if (s.isDirectory()) throw new RemoteError('EISDIR', `read "${rel}" on ${this.displayUrl}: it is a directory`)
      return { fh, size: s.size }
    } catch (error) {
      await fh.close()
      throw error
    }
  }

  protected async _createReadStream(rel: string, range: ReadRange): Promise<Readable> {
    const { fh } = await this.#openForRead(rel)
    const stream = createReadStream('', {
      fd: fh,
      start: range.start,
      ...(range.end === undefined ? {} : { end: range.end }),
      highWaterMark: 1024 * 1024,
      ...(range.signal === undefined ? {} : { signal: range.signal }),
    })
    stream.once('close', () => this.countBytes('read', stream.bytesRead))
    return stream
  }

  /** One FileHandle for all the reads (the symlink check done once, at open). */
  protected override async _openFile(rel: string): Promise<RemoteFile> {
    const { fh, size } = await this.#openForRead(rel)
    return new LocalFile(fh, size, (n) => this.countBytes('read', n))
  }

  protected override async _readFile(rel: string, signal: AbortSignal | undefined, into?: ReadFileOptions['into']): Promise<Buffer> {
    const real = await this.#inside('readFile', rel)
    const data = await readWhole(real, signal, into)
    this.countBytes('read', data.length)
    return data
  }

  protected async _list(rel: string, options: ListOptions): Promise<ListEntry[]> {
    const out: ListEntry[] = []
    const walk = async (dir: string, prefix: string) => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        if (options.includeHidden !== true && e.name.startsWith('.')) continue
        const p = prefix === '' ? e.name : `${prefix}/${e.name}`
        if (e.isDirectory() && options.recursive === true) await walk(join(dir, e.name), p)
        else out.push({ path: p, isDirectory: e.isDirectory() })
      }
    }
    await walk(await this.#inside('list', rel), '')
    return out
  }

  protected async _stat(rel: string): Promise<RemoteStat> {
    const s = await stat(await this.#inside('stat', rel))
    return { size: s.isDirectory() ? 0 : s.size, isDirectory: s.isDirectory(), mtimeMs: s.mtimeMs }
  }

  protected async _rename(from: string, to: string): Promise<void> {
    await stat(this.#abs(from)).catch((e: unknown) => {
      throw toRemoteError(e, 'rename', from, this.displayUrl)
    })
    await mkdir(dirname(this.#abs(to)), { recursive: true })
    await rename(this.#abs(from), this.#abs(to))
  }

  protected async _unlink(rel: string): Promise<void> {
    await unlink(this.#abs(rel))
  }

  protected async _rmtree(rel: string): Promise<void> {
    await rm(this.#abs(rel), { recursive: true, force: true })
  }

  /** An atomic rmdir, where the default would list then remove. */
  protected override async _removeEmptyDir(rel: string): Promise<boolean> {
    try {
      await rmdir(this.#abs(rel))
      return true
    } catch (error) {
      const code = (error as { code?: unknown }).code
      if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOENT' || code === 'ENOTDIR') return false
      throw error
    }
  }

  protected async _mkdir(rel: string): Promise<void> {
    await mkdir(this.#abs(rel), { recursive: true })
  }
}

class LocalFile implements RemoteFile {
  constructor(
    readonly fh: FileHandle,
    readonly size: number,
    readonly onBytes: (n: number) => void,
  ) {}

  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    let at = 0
    while (at < length) {
      const { bytesRead } = await this.fh.read(buffer, offset + at, length - at, position + at)
      if (bytesRead === 0) break
      at += bytesRead
    }
    this.onBytes(at)
    return at
  }

  async close(): Promise<void> {
    await this.fh.close()
  }
}

/**
 * A whole file (its size at open) in one positioned read into a buffer of that size: fs.promises.readFile
 * reads 512 KiB at a time, five thread-pool round trips for a 2 MiB block file of a VhdDirectory. Local
 * files are published by rename, never written in place, so the size does not change under the read.
 */
async function readWhole(path: string, signal: AbortSignal | undefined, into: ReadFileOptions['into']): Promise<Buffer> {
  signal?.throwIfAborted()
  const fh = await open(path, 'r')
  try {
    const { size } = await fh.stat()
    if (size === 0) return await readFile(fh, signal === undefined ? {} : { signal }) // a /proc-like file, or empty
    const given = into?.(size)
    const buf = given !== undefined && given.length >= size ? given.subarray(0, size) : Buffer.allocUnsafe(size)
    let at = 0
    while (at < size) {
      const { bytesRead } = await fh.read(buf, at, size - at, at)
      signal?.throwIfAborted()
      if (bytesRead === 0) return buf.subarray(0, at) // truncated meanwhile
      at += bytesRead
    }
    return buf
  } finally {
    await fh.close()
  }
}

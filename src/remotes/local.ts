/**
 * Local remote: a directory of this host (`file:///path`), on node:fs. Writes go through
 * LocalWriteStream (temporary + fsync + rename). The root must exist: a missing mount point must fail
 * loudly instead of silently filling the system disk. Reads (read streams, readFile, stat, list) never
 * follow a symlink out of the root: the path is resolved (realpath) and must stay under the resolved root,
 * or the read fails with EACCES; links inside the root work.
 */
import { randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, open, readdir, readFile, realpath, rename, rm, rmdir, stat, unlink } from 'node:fs/promises'
import { dirname, join, sep } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { RemoteError } from '../common/errors.js'
import { LocalWriteStream } from './local-writer.js'
import { Remote, temporaryName, type ListEntry, type ListOptions, type ReadStreamOptions, type RemoteStat, type WriteFileOptions, type WriteStreamOptions } from './remote.js'
import { checkRange, toRemoteError } from './remote-errors.js'
import type { FileRemoteUrl, RemoteOptions } from './url-types.js'
import { redactRemoteUrl } from './url.js'

export class LocalRemote extends Remote {
  readonly kind = 'file' as const
  readonly displayUrl: string
  readonly root: string
  #rootReal: Promise<string> | undefined

  constructor(url: FileRemoteUrl, _options: RemoteOptions = {}) {
    super()
    if (!url.path.startsWith('/')) throw new RemoteError('EINVAL', `local remote: the path "${url.path}" must be absolute`)
    this.root = url.path
    this.displayUrl = redactRemoteUrl(url)
  }

  #abs(path: string): { rel: string; abs: string } {
    const rel = this.resolvePath(path)
    return { rel, abs: rel === '' ? this.root : join(this.root, rel) }
  }

  /**
   * `abs` with every symlink resolved, refused (EACCES) when it leads out of the root. Reads then open
   * the resolved path itself, not the link.
   */
  async #inside(op: string, rel: string, abs: string): Promise<string> {
    // the root's own resolution is kept (one realpath per read, not two: a restore reads a file per block)
    this.#rootReal ??= realpath(this.root)
    const rootReal = await this.#rootReal.catch((e: unknown) => {
      this.#rootReal = undefined
      return this.#err(op, '/')(e)
    })
    const real = await realpath(abs).catch(this.#err(op, rel))
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

  async open(): Promise<void> {
    await this.track('open', async () => {
      const s = await stat(this.root).catch(this.#err('open', '/'))
      if (!s.isDirectory()) throw new RemoteError('ENOTDIR', `${this.displayUrl}: the remote root is not a directory`)
    })
  }

  async close(): Promise<void> {
    await Promise.resolve()
  }

  async createWriteStream(path: string, options: WriteStreamOptions = {}): Promise<Writable> {
    const { rel, abs } = this.#abs(path)
    if (rel === '') throw new RemoteError('EISDIR', `createWriteStream: a file path is required, got the remote root of ${this.displayUrl}`)
    return this.track('createWriteStream', async () => {
      options.signal?.throwIfAborted()
      await Promise.resolve()
      return new LocalWriteStream({
        finalPath: abs,
        tmpPath: join(this.root, temporaryName(rel, randomBytes(6).toString('hex'))),
        exclusive: options.exclusive === true,
        ...(options.signal === undefined ? {} : { signal: options.signal }),
        onBytes: (n) => this.countBytes('write', n),
        mapError: (e) => toRemoteError(e, 'write', rel, this.displayUrl),
      })
    })
  }

  async createReadStream(path: string, options: ReadStreamOptions = {}): Promise<Readable> {
    const { rel, abs } = this.#abs(path)
    const { start, end } = checkRange(options, rel)
    return this.track('createReadStream', async () => {
      const real = await this.#inside('read', rel, abs)
      const fh = await open(real, 'r').catch(this.#err('read', rel))
      const s = await fh.stat()
      if (s.isDirectory()) {
        await fh.close()
        throw new RemoteError('EISDIR', `read "${rel}" on ${this.displayUrl}: it is a directory`)
      }
      const stream = createReadStream('', {
        fd: fh,
        start,
        ...(end === undefined ? {} : { end }),
        highWaterMark: 1024 * 1024,
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      })
      stream.once('close', () => this.countBytes('read', stream.bytesRead))
      return stream
    })
  }

  async readFile(path: string, options: { signal?: AbortSignal } = {}): Promise<Buffer> {
    const { rel, abs } = this.#abs(path)
    return this.track('readFile', async () => {
      const real = await this.#inside('readFile', rel, abs)
      const data = await readWhole(real, options.signal).catch(this.#err('readFile', rel))
      this.countBytes('read', data.length)
      return data
    })
  }

  async writeFile(path: string, data: Uint8Array | string, options: WriteFileOptions = {}): Promise<void> {
    const out = await this.createWriteStream(path, options)
    await this.track('writeFile', async () => {
      out.end(data)
      await finished(out)
    })
  }

  async list(path: string, options: ListOptions = {}): Promise<ListEntry[]> {
    const { rel, abs } = this.#abs(path)
    return this.track('list', async () => {
      const out: ListEntry[] = []
      const walk = async (dir: string, prefix: string) => {
        const entries = await readdir(dir, { withFileTypes: true }).catch(this.#err('list', rel))
        for (const e of entries) {
          if (options.includeHidden !== true && e.name.startsWith('.')) continue
          const p = prefix === '' ? e.name : `${prefix}/${e.name}`
          if (e.isDirectory()) {
            if (options.recursive === true) await walk(join(dir, e.name), p)
            else out.push({ path: p, isDirectory: true })
          } else {
            out.push({ path: p, isDirectory: false })
          }
        }
      }
      await walk(await this.#inside('list', rel, abs), '')
      return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
    })
  }

  async stat(path: string): Promise<RemoteStat> {
    const { rel, abs } = this.#abs(path)
    return this.track('stat', async () => {
      const s = await stat(await this.#inside('stat', rel, abs)).catch(this.#err('stat', rel))
      return { size: s.isDirectory() ? 0 : s.size, isDirectory: s.isDirectory(), mtimeMs: s.mtimeMs }
    })
  }

  async rename(from: string, to: string): Promise<void> {
    const a = this.#abs(from)
    const b = this.#abs(to)
    await this.track('rename', async () => {
      await stat(a.abs).catch(this.#err('rename', a.rel))
      await mkdir(dirname(b.abs), { recursive: true }).catch(this.#err('rename', b.rel))
      await rename(a.abs, b.abs).catch(this.#err('rename', `${a.rel} -> ${b.rel}`))
    })
  }

  async unlink(path: string): Promise<void> {
    const { rel, abs } = this.#abs(path)
    await this.track('unlink', async () => {
      await unlink(abs).catch(this.#err('unlink', rel))
    })
  }

  async rmtree(path: string): Promise<void> {
    const { rel, abs } = this.#abs(path)
    if (rel === '') throw new RemoteError('EACCES', `rmtree refused on ${this.displayUrl}: it would delete the whole remote`)
    await this.track('rmtree', async () => {
      await rm(abs, { recursive: true, force: true }).catch(this.#err('rmtree', rel))
    })
  }

  override async removeEmptyDir(path: string): Promise<boolean> {
    const { rel, abs } = this.#abs(path)
    if (rel === '') return false
    return this.track('removeEmptyDir', async () => {
      try {
        await rmdir(abs)
        return true
      } catch (error) {
        const code = (error as { code?: unknown }).code
        if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOENT' || code === 'ENOTDIR') return false
        throw toRemoteError(error, 'removeEmptyDir', rel, this.displayUrl)
      }
    })
  }

  async mkdir(path: string): Promise<void> {
    const { rel, abs } = this.#abs(path)
    await this.track('mkdir', async () => {
      await mkdir(abs, { recursive: true }).catch(this.#err('mkdir', rel))
    })
  }
}

/**
 * A whole file (its size at open) in one positioned read into a buffer of that size: fs.promises.readFile
 * reads 512 KiB at a time, five thread-pool round trips for a 2 MiB block file of a VhdDirectory. Local
 * files are published by rename, never written in place, so the size does not change under the read.
 */
async function readWhole(path: string, signal: AbortSignal | undefined): Promise<Buffer> {
  signal?.throwIfAborted()
  const fh = await open(path, 'r')
  try {
    const { size } = await fh.stat()
    if (size === 0) return await readFile(fh, signal === undefined ? {} : { signal }) // a /proc-like file, or empty
    const buf = Buffer.allocUnsafe(size)
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

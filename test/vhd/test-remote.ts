/**
 * Test-only local-directory Remote used by the VHD tests until the real LocalRemote (src/remotes/local.ts)
 * is committed: same contract (atomic createWriteStream with a `.<name>.<rand>.tmp` temporary published
 * on 'finish', removed on destroy), on node:fs without fsync. Not a mock: real files, real streams.
 */
import { randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, readFile, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { Writable, type Readable } from 'node:stream'
import { RemoteError } from '../../src/common/errors.js'
import { Remote, temporaryName, type ListEntry, type ListOptions, type ReadStreamOptions, type RemoteStat, type WriteFileOptions, type WriteStreamOptions } from '../../src/remotes/remote.js'

function mapError(error: unknown, path: string): never {
  const code = (error as { code?: unknown }).code
  if (code === 'ENOENT' || code === 'EEXIST' || code === 'ENOTEMPTY' || code === 'EISDIR' || code === 'ENOTDIR') throw new RemoteError(code, `${String(code)}: ${path}`, { cause: error })
  throw error
}

class AtomicFileWriter extends Writable {
  readonly #fd: ReturnType<typeof createWriteStream>
  constructor(
    readonly tmp: string,
    readonly final: string,
  ) {
    super({ highWaterMark: 4 * 1024 * 1024 })
    this.#fd = createWriteStream(tmp, { highWaterMark: 4 * 1024 * 1024 })
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (error?: Error | null) => void): void {
    if (this.#fd.write(chunk)) cb()
    else this.#fd.once('drain', () => cb())
  }
  override _writev(chunks: { chunk: Buffer }[], cb: (error?: Error | null) => void): void {
    let ok = true
    for (const { chunk } of chunks) ok = this.#fd.write(chunk)
    if (ok) cb()
    else this.#fd.once('drain', () => cb())
  }
  override _final(cb: (error?: Error | null) => void): void {
    this.#fd.end(() => {
      rename(this.tmp, this.final).then(() => cb(), cb)
    })
  }
  override _destroy(error: Error | null, cb: (error?: Error | null) => void): void {
    this.#fd.destroy()
    this.#fd.once('close', () => {
      if (this.writableFinished) return cb(error)
      rm(this.tmp, { force: true }).then(() => cb(error), cb)
    })
  }
}

export class TestLocalRemote extends Remote {
  readonly kind = 'file' as const
  readonly displayUrl: string
  constructor(readonly root: string) {
    super()
    this.displayUrl = `file://${root}`
  }
  #abs(path: string): string {
    return join(this.root, this.resolvePath(path))
  }
  async open(): Promise<void> {
    await mkdir(this.root, { recursive: true })
  }
  async close(): Promise<void> {}
  async createWriteStream(path: string, options: WriteStreamOptions = {}): Promise<Writable> {
    const final = this.#abs(path)
    if (options.exclusive === true && (await this.exists(path))) throw new RemoteError('EEXIST', `${path} exists`)
    await mkdir(dirname(final), { recursive: true })
    const tmp = join(this.root, temporaryName(this.resolvePath(path), randomBytes(4).toString('hex')))
    const writer = new AtomicFileWriter(tmp, final)
    options.signal?.addEventListener('abort', () => writer.destroy(new Error('aborted')), { once: true })
    return writer
  }
  async createReadStream(path: string, options: ReadStreamOptions = {}): Promise<Readable> {
    await this.stat(path)
    return createReadStream(this.#abs(path), { start: options.start ?? 0, ...(options.end === undefined ? {} : { end: options.end }), highWaterMark: 1024 * 1024 })
  }
  async readFile(path: string): Promise<Buffer> {
    return readFile(this.#abs(path)).catch((e: unknown) => mapError(e, path))
  }
  async writeFile(path: string, data: Uint8Array | string, options: WriteFileOptions = {}): Promise<void> {
    const final = this.#abs(path)
    if (options.exclusive === true && (await this.exists(path))) throw new RemoteError('EEXIST', `${path} exists`)
    await mkdir(dirname(final), { recursive: true })
    const tmp = join(this.root, temporaryName(this.resolvePath(path), randomBytes(4).toString('hex')))
    await writeFile(tmp, data)
    await rename(tmp, final)
  }
  async list(path: string, options: ListOptions = {}): Promise<ListEntry[]> {
    const abs = this.#abs(path)
    const entries = await readdir(abs, { withFileTypes: true, recursive: options.recursive === true }).catch((e: unknown) => mapError(e, path))
    return entries
      .map((e) => ({ path: join(e.parentPath, e.name).slice(abs.length + 1), isDirectory: e.isDirectory() }))
      .filter((e) => options.includeHidden === true || !e.path.split('/').some((p) => p.startsWith('.')))
      .sort((a, b) => (a.path < b.path ? -1 : 1))
  }
  async stat(path: string): Promise<RemoteStat> {
    const s = await stat(this.#abs(path)).catch((e: unknown) => mapError(e, path))
    return { size: s.isDirectory() ? 0 : s.size, isDirectory: s.isDirectory(), mtimeMs: s.mtimeMs }
  }
  async rename(from: string, to: string): Promise<void> {
    await mkdir(dirname(this.#abs(to)), { recursive: true })
    await rename(this.#abs(from), this.#abs(to)).catch((e: unknown) => mapError(e, from))
  }
  async unlink(path: string): Promise<void> {
    await unlink(this.#abs(path)).catch((e: unknown) => mapError(e, path))
  }
  async rmtree(path: string): Promise<void> {
    await rm(this.#abs(path), { recursive: true, force: true })
  }
  async mkdir(path: string): Promise<void> {
    await mkdir(this.#abs(path), { recursive: true })
  }
}

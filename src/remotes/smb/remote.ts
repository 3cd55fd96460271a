/**
 * SMB remote: a Windows/Samba share reached with our own userspace SMB 2.1/3.x client (client.ts), so
 * the proxy needs no kernel mount, no root and no CAP_SYS_ADMIN. URL in XO's format
 * (`smb://user:password@domain\\host\share\0sub\dir`); paths are resolved inside `sub\dir`.
 *
 * One SMB connection (session + tree) is shared by every operation and stream of the remote; it is
 * made lazily and remade after a connection loss, so a dead connection fails only the operations that
 * were on it. Temporaries that a writer could not delete because its connection died are remembered
 * and deleted right after the next connection is made.
 *
 * Operations map to SMB as (each "+" chain sent as one compound, one round trip): stat = CREATE
 * (attributes come back in the response) + CLOSE; unlink / rmdir = CREATE(DELETE) + SET_INFO
 * FileDispositionInformation + CLOSE; rename = CREATE(DELETE) + SET_INFO FileRenameInformation + CLOSE;
 * mkdir = CREATE(OPEN_IF, directory) + CLOSE per missing level; list = CREATE(directory), then
 * QUERY_DIRECTORY until NO_MORE_FILES, then CLOSE.
 */
import { posix } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { RemoteError } from '../../common/errors.js'
import { Remote, type ListEntry, type ListOptions, type ReadRange, type RemoteStat, type WriteStreamOptions, type WriteTarget } from '../remote.js'
import type { RemoteOptions, SmbRemoteUrl } from '../url-types.js'
import { redactRemoteUrl } from '../url.js'
import { SmbClient, type CreateParams, type DirEntry, type OpenResult } from './client.js'
import { parseDialect } from './session-setup.js'
import { ntStatusOf } from './errors.js'
import { SmbReadStream } from './reader.js'
import { NtStatus } from './status.js'
import { Access, CreateOptions, Disposition, FileAttributes, FileInfoClass, ShareAccess } from './wire.js'
import { DELETE_PENDING, renameInfo, SmbWriteStream } from './writer.js'

const MiB = 1024 * 1024
const DEFAULT_IO_SIZE = MiB
const DEFAULT_WINDOW = 8

const OPEN_ATTRIBUTES: CreateParams = { access: Access.FILE_READ_ATTRIBUTES | Access.SYNCHRONIZE, disposition: Disposition.OPEN, options: 0 }
const OPEN_READ: CreateParams = {
  access: Access.FILE_READ_DATA | Access.FILE_READ_ATTRIBUTES | Access.SYNCHRONIZE,
  disposition: Disposition.OPEN,
  options: CreateOptions.NON_DIRECTORY_FILE,
}
const OPEN_LIST: CreateParams = {
  access: Access.FILE_LIST_DIRECTORY | Access.FILE_READ_ATTRIBUTES | Access.SYNCHRONIZE,
  disposition: Disposition.OPEN,
  options: CreateOptions.DIRECTORY_FILE,
}
const OPEN_DELETE: CreateParams = { access: Access.DELETE | Access.FILE_READ_ATTRIBUTES | Access.SYNCHRONIZE, disposition: Disposition.OPEN, options: 0 }
const MKDIR: CreateParams = {
  access: Access.FILE_LIST_DIRECTORY | Access.FILE_READ_ATTRIBUTES | Access.SYNCHRONIZE,
  disposition: Disposition.OPEN_IF,
  options: CreateOptions.DIRECTORY_FILE,
  attributes: FileAttributes.DIRECTORY,
}
const CREATE_TEMP: CreateParams = {
  access: Access.FILE_WRITE_DATA | Access.FILE_READ_ATTRIBUTES | Access.FILE_WRITE_ATTRIBUTES | Access.DELETE | Access.SYNCHRONIZE,
  disposition: Disposition.CREATE,
  options: CreateOptions.NON_DIRECTORY_FILE,
  attributes: FileAttributes.NORMAL,
  share: ShareAccess.READ | ShareAccess.DELETE,
}

function checkInt(name: string, value: number | undefined, min: number, max: number): void {
  if (value !== undefined && (!Number.isSafeInteger(value) || value < min || value > max)) {
    throw new RemoteError('EINVAL', `SMB remote option ${name} must be an integer from ${min} to ${max}, got ${value}`)
  }
}

export class SmbRemote extends Remote {
  readonly kind = 'smb' as const
  readonly displayUrl: string
  readonly #url: SmbRemoteUrl
  readonly #port: number
  readonly #maxDialect: string
  readonly #requireSigning: boolean
  readonly #ioSize: number
  readonly #window: number
  #client: SmbClient | undefined
  #connecting: Promise<SmbClient> | undefined
  /** temporaries left by writers whose connection died: deleted on the next connection */
  readonly #orphans = new Set<string>()

  constructor(url: SmbRemoteUrl, options: RemoteOptions = {}) {
    super()
    this.#url = url
    this.displayUrl = redactRemoteUrl(url)
    checkInt('smbPort', options.smbPort, 1, 65535)
    checkInt('smbIoSizeBytes', options.smbIoSizeBytes, 4096, 8 * MiB)
    checkInt('smbWindow', options.smbWindow, 1, 64)
    this.#maxDialect = options.protocolVersion ?? '3.1.1'
    parseDialect(this.#maxDialect) // refuses an unknown version up front
    this.#port = options.smbPort ?? 445
    this.#requireSigning = options.smbRequireSigning ?? false
    this.#ioSize = options.smbIoSizeBytes ?? DEFAULT_IO_SIZE
    this.#window = options.smbWindow ?? DEFAULT_WINDOW
    if (url.host === '' || url.share === '') throw new RemoteError('EINVAL', `${this.displayUrl}: the SMB URL needs a host and a share`)
  }

  /** The live client, connecting (or reconnecting) when needed. */
  async #get(): Promise<SmbClient> {
    if (this.#client !== undefined && !this.#client.closed) return this.#client
    this.#connecting ??= (async () => {
      try {
        const client = await SmbClient.connect({
          host: this.#url.host,
          port: this.#port,
          share: this.#url.share,
          username: this.#url.username,
          password: this.#url.password,
          domain: this.#url.domain,
          maxDialect: this.#maxDialect,
          requireSigning: this.#requireSigning,
          ioSizeBytes: this.#ioSize,
          connectTimeoutMs: 10_000,
          requestTimeoutMs: 120_000,
        })
        client.conn.onClose(() => {
          if (this.#client === client) this.#client = undefined
        })
        this.#client = client
        await this.#removeOrphans(client)
        return client
      } finally {
        this.#connecting = undefined
      }
    })()
    return this.#connecting
  }

  /**
   * Deletes the temporaries of writers whose connection died. Best effort by design: a failure must not
   * block the new connection (the name stays queued for the next one, and removeTemporaries() also finds
   * it); each failure is reported as a failed `removeOrphan` op event, so metrics see it.
   */
  async #removeOrphans(client: SmbClient): Promise<void> {
    for (const path of [...this.#orphans]) {
      const start = performance.now()
      try {
        await this.#deleteAt(client, path, OPEN_DELETE)
        this.#orphans.delete(path)
        this.emit('op', { op: 'removeOrphan', durationMs: performance.now() - start, ok: true })
      } catch (error) {
        const code = error instanceof RemoteError ? error.code : 'E_REMOTE'
        if (code === 'ENOENT') this.#orphans.delete(path)
        else this.emit('op', { op: 'removeOrphan', durationMs: performance.now() - start, ok: false, code })
        if (client.closed) return
      }
    }
  }

  /** `\`-separated path from the share root for a resolved remote-relative path. */
  #smb(rel: string): string {
    const base = this.#url.path
    const joined = base === '' ? rel : rel === '' ? base : `${base}/${rel}`
    return joined.replaceAll('/', '\\')
  }

  #describe<T>(op: string, rel: string, error: unknown): T {
    if (error instanceof RemoteError) {
      const message = `${op} "${rel}" on ${this.displayUrl} failed: ${error.message}`
      throw new RemoteError(error.code as ConstructorParameters<typeof RemoteError>[0], message, { cause: error, fields: { ...error.fields, op, path: rel } })
    }
    throw error
  }

  async #withOpen<T>(client: SmbClient, path: string, params: CreateParams, fn: (file: OpenResult) => Promise<T>): Promise<T> {
    const file = await client.create(path, params)
    let result: T
    try {
      result = await fn(file)
    } catch (error) {
      // the operation's error is what matters; a failing CLOSE after it adds nothing
      await client.close(file.fileId, path).catch(() => undefined)
      throw error
    }
    await client.close(file.fileId, path)
    return result
  }

  async #deleteAt(client: SmbClient, path: string, params: CreateParams): Promise<void> {
    await client.createSetInfoClose(path, params, FileInfoClass.DISPOSITION, DELETE_PENDING)
  }

  protected async _open(): Promise<void> {
    const client = await this.#get()
    const root = await client.createClose(this.#smb(''), OPEN_ATTRIBUTES).catch((e: unknown) => this.#describe<OpenResult>('open', '/', e))
    if (!root.isDirectory) throw new RemoteError('ENOTDIR', `${this.displayUrl}: the remote root is not a directory`)
  }

  protected async _close(): Promise<void> {
    const client = this.#client
    this.#client = undefined
    if (client !== undefined) await client.disconnect()
  }

  protected async _stat(rel: string): Promise<RemoteStat> {
    const client = await this.#get()
    try {
      const f = await client.createClose(this.#smb(rel), OPEN_ATTRIBUTES)
      return { size: f.isDirectory ? 0 : f.sizeBytes, isDirectory: f.isDirectory, mtimeMs: f.mtimeMs }
    } catch (error) {
      return this.#describe('stat', rel, error)
    }
  }

  protected async _mkdir(rel: string): Promise<void> {
    const client = await this.#get()
    await this.#mkdirp(client, rel).catch((e: unknown) => this.#describe('mkdir', rel, e))
  }

  async #mkdirp(client: SmbClient, rel: string): Promise<void> {
    if (rel === '') return
    try {
      await client.createClose(this.#smb(rel), MKDIR)
    } catch (error) {
      if (ntStatusOf(error) !== NtStatus.OBJECT_PATH_NOT_FOUND) throw error
      const parent = posix.dirname(rel)
      await this.#mkdirp(client, parent === '.' ? '' : parent)
      await client.createClose(this.#smb(rel), MKDIR)
    }
  }

  protected async _list(rel: string, options: ListOptions): Promise<ListEntry[]> {
    const client = await this.#get()
    const out: ListEntry[] = []
    const hidden = options.includeHidden === true
    const walk = async (dir: string, prefix: string) => {
      const entries = await this.#readDir(client, dir)
      for (const e of entries) {
        if (!hidden && e.name.startsWith('.')) continue
        const p = prefix === '' ? e.name : `${prefix}/${e.name}`
        if (options.recursive === true) {
          if (e.isDirectory) await walk(dir === '' ? e.name : `${dir}/${e.name}`, p)
          else out.push({ path: p, isDirectory: false })
        } else out.push({ path: p, isDirectory: e.isDirectory })
      }
    }
    await walk(rel, '').catch((e: unknown) => this.#describe('list', rel, e))
    return out
  }

  async #readDir(client: SmbClient, rel: string): Promise<DirEntry[]> {
    const path = this.#smb(rel)
    return this.#withOpen(client, path, OPEN_LIST, async (dir) => {
      const all: DirEntry[] = []
      for (let first = true; ; first = false) {
        const batch = await client.queryDirectory(dir.fileId, first, path)
        if (batch === null) return all
        all.push(...batch)
      }
    })
  }

  protected async _unlink(rel: string): Promise<void> {
    const client = await this.#get()
    await this.#deleteAt(client, this.#smb(rel), { ...OPEN_DELETE, options: CreateOptions.NON_DIRECTORY_FILE }).catch((e: unknown) => this.#describe('unlink', rel, e))
  }

  protected async _rmtree(rel: string): Promise<void> {
    const client = await this.#get()
    const remove = async (dir: string): Promise<void> => {
      const entries = await this.#readDir(client, dir)
      const files = entries.filter((e) => !e.isDirectory)
      for (let i = 0; i < files.length; i += 16) {
        await Promise.all(files.slice(i, i + 16).map((f) => this.#deleteAt(client, this.#smb(`${dir}/${f.name}`), OPEN_DELETE)))
      }
      for (const d of entries.filter((e) => e.isDirectory)) await remove(`${dir}/${d.name}`)
      await this.#deleteAt(client, this.#smb(dir), { ...OPEN_DELETE, options: CreateOptions.DIRECTORY_FILE })
    }
    try {
      await remove(rel)
    } catch (error) {
      const status = ntStatusOf(error)
      if (status === NtStatus.OBJECT_NAME_NOT_FOUND || status === NtStatus.OBJECT_PATH_NOT_FOUND) return
      if (status === NtStatus.NOT_A_DIRECTORY) {
        // rmtree of a file removes the file
        await this.#deleteAt(client, this.#smb(rel), OPEN_DELETE).catch((e: unknown) => this.#describe('rmtree', rel, e))
        return
      }
      this.#describe('rmtree', rel, error)
    }
  }

  protected async _rename(src: string, dst: string): Promise<void> {
    const client = await this.#get()
    const attempt = () => client.createSetInfoClose(this.#smb(src), OPEN_DELETE, FileInfoClass.RENAME, renameInfo(this.#smb(dst), true), `${src} -> ${dst}`)
    try {
      await attempt()
    } catch (error) {
      // the source exists (it was opened) but the target's directory does not: create it, as writers do
      if (!(error instanceof RemoteError && error.fields.command === 'SET_INFO' && ntStatusOf(error) === NtStatus.OBJECT_PATH_NOT_FOUND)) {
        this.#describe('rename', `${src} -> ${dst}`, error)
      }
      const parent = posix.dirname(dst)
      await this.#mkdirp(client, parent === '.' ? '' : parent)
      await attempt().catch((e: unknown) => this.#describe('rename', `${src} -> ${dst}`, e))
    }
  }

  protected async _createWriteStream(target: WriteTarget, options: WriteStreamOptions): Promise<Writable> {
    const { path: rel, temporary: tmpRel } = target
    const client = await this.#get()
    const tmpPath = this.#smb(tmpRel)
    let file: OpenResult
    try {
      file = await client.create(tmpPath, CREATE_TEMP)
    } catch (error) {
      if (ntStatusOf(error) !== NtStatus.OBJECT_PATH_NOT_FOUND) return this.#describe('write', rel, error)
      const parent = posix.dirname(rel)
      await this.#mkdirp(client, parent === '.' ? '' : parent).catch((e: unknown) => this.#describe('write', rel, e))
      file = await client.create(tmpPath, CREATE_TEMP).catch((e: unknown) => this.#describe<OpenResult>('write', rel, e))
    }
    return new SmbWriteStream({
      client,
      fileId: file.fileId,
      tmpPath,
      finalPath: this.#smb(rel),
      displayPath: rel,
      exclusive: options.exclusive === true,
      ioSizeBytes: Math.min(this.#ioSize, client.maxWriteBytes),
      window: this.#window,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      onBytes: (n) => this.countBytes('write', n),
      onOrphan: (p) => this.#orphans.add(p),
    })
  }

  protected async _createReadStream(rel: string, range: ReadRange): Promise<Readable> {
    const { start, end, signal } = range
    const client = await this.#get()
    const file = await client.create(this.#smb(rel), OPEN_READ).catch((e: unknown) => this.#describe<OpenResult>('read', rel, e))
    const endExclusive = Math.min(file.sizeBytes, end === undefined ? Infinity : end + 1)
    return new SmbReadStream({
      client,
      fileId: file.fileId,
      displayPath: rel,
      start,
      endExclusive: Math.max(start, endExclusive),
      ioSizeBytes: Math.min(this.#ioSize, client.maxReadBytes),
      window: this.#window,
      ...(signal === undefined ? {} : { signal }),
      onBytes: (n) => this.countBytes('read', n),
    })
  }
}

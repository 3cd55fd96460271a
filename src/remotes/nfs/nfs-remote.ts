/**
 * The NFS remote: the remote contract on a userspace NFSv3 client (no kernel mount, no root needed).
 *
 * A session is one TCP connection to the NFS port plus the export's root handle (portmapper + MOUNT3,
 * see mount.ts). Operations walk paths with LOOKUP from a cache of directory handles. When the
 * connection dies, every pending call fails (an in-progress write stream errors and drops its
 * temporary), and the next operation opens a new session; temporaries that could not be removed while
 * the connection was down are removed then.
 *
 * Writes: CREATE GUARDED of a hidden temporary beside the final name, pipelined UNSTABLE WRITEs and
 * COMMITs (write-window.ts), then RENAME onto the final name — or LINK + REMOVE for exclusive writes, so
 * an existing file is never replaced. NFS status codes map to POSIX codes in status.ts.
 */
import { posix } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { ConfigInvalidError, RemoteError, toError, type PosixCode } from '../../common/errors.js'
import { Remote, type ListEntry, type ListOptions, type ReadRange, type RemoteStat, type WriteStreamOptions, type WriteTarget } from '../remote.js'
import { toRemoteError } from '../remote-errors.js'
import type { NfsRemoteUrl, RemoteOptions } from '../url-types.js'
import { redactRemoteUrl } from '../url.js'
import { defaultMachineName, getPort, mountExport, NFS_PROGRAM, type Endpoint } from './mount.js'
import { Nfs3Client, Nfs3StatusError, UNSTABLE } from './nfs3.js'
import { RpcConnection, type AuthSys } from './rpc.js'
import { NFS3ERR_EXIST, NFS3ERR_NOENT, NFS3ERR_NOTSUPP, NFS3ERR_STALE, nfs3Error } from './status.js'
import { dirHandle, emptyDir, forgetDirs, lookupPath, parentOf, type Session } from './session.js'
import { NfsReadStream, NfsWriteStream } from './streams.js'

const MiB = 1024 * 1024
const DEFAULT_WINDOW = 8
const MAX_BLOCK_BYTES = MiB

interface NfsTuning {
  connectTimeoutMs: number
  callTimeoutMs: number
  /** WRITE/READ size cap (the server's wtmax/rtmax lower it); default 1 MiB */
  maxBlockBytes: number
}


function checkOptions(options: RemoteOptions): { uid: number; gid: number; window: number } {
  const issues: { path: string; message: string }[] = []
  const id = (key: 'uid' | 'gid'): number => {
    const v = options[key]
    if (v === undefined) return 0
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) issues.push({ path: key, message: `must be an integer from 0 to 4294967295 (the AUTH_SYS ${key} sent to the NFS server), got ${v}` })
    return v
  }
  const uid = id('uid')
  const gid = id('gid')
  const window = options.nfsWindow ?? DEFAULT_WINDOW
  if (!Number.isInteger(window) || window < 1 || window > 64) issues.push({ path: 'nfsWindow', message: `must be an integer from 1 to 64 (WRITEs/READs of up to 1 MiB in flight per stream), got ${window}` })
  if (issues.length > 0) throw new ConfigInvalidError(issues)
  return { uid, gid, window }
}

export class NfsRemote extends Remote {
  readonly kind = 'nfs' as const
  readonly displayUrl: string
  private readonly auth: AuthSys
  private readonly window: number
  private readonly endpoint: Endpoint
  private readonly maxBlockBytes: number
  private session: Session | undefined
  private opening: Promise<Session> | undefined
  /** bumped by close(): a connect() that started before does not install its session */
  private generation = 0
  /** temporaries a failed writer could not remove (connection down): removed on the next session */
  private readonly orphans = new Set<string>()

  constructor(
    private readonly url: NfsRemoteUrl,
    options: RemoteOptions = {},
    tuning: Partial<NfsTuning> = {},
  ) {
    super()
    const { uid, gid, window } = checkOptions(options)
    if (!url.path.startsWith('/')) throw new RemoteError('EINVAL', `NFS remote: the export path "${url.path}" must be absolute`)
    this.displayUrl = redactRemoteUrl(url)
    this.auth = { uid, gid, machineName: defaultMachineName() }
    this.window = window
    this.maxBlockBytes = tuning.maxBlockBytes ?? MAX_BLOCK_BYTES
    this.endpoint = { host: url.host, label: this.displayUrl, connectTimeoutMs: tuning.connectTimeoutMs ?? 10_000, callTimeoutMs: tuning.callTimeoutMs ?? 60_000 }
  }

  // ---------------------------------------------------------------- sessions

  protected async _open(): Promise<void> {
    await this.getSession()
  }

  protected async _close(): Promise<void> {
    this.generation++
    this.opening = undefined
    const s = this.session
    this.session = undefined
    s?.client.rpc.close()
    await Promise.resolve()
  }

  private async getSession(): Promise<Session> {
    if (this.session?.client.rpc.alive === true) return this.session
    this.session = undefined
    if (this.opening === undefined) {
      const opening: Promise<Session> = this.connect().finally(() => {
        if (this.opening === opening) this.opening = undefined
      })
      this.opening = opening
    }
    return this.opening
  }

  private async connect(): Promise<Session> {
    const generation = this.generation
    const mounted = await mountExport(this.endpoint, this.url.path, this.auth)
    const port = this.url.port ?? (await getPort(this.endpoint, NFS_PROGRAM, 3))
    const rpc = await RpcConnection.open({ host: this.url.host, port, auth: this.auth, callTimeoutMs: this.endpoint.callTimeoutMs, connectTimeoutMs: this.endpoint.connectTimeoutMs, label: this.displayUrl })
    try {
      const client = new Nfs3Client(rpc, this.displayUrl)
      let root = mounted.root
      for (const [i, name] of mounted.rest.entries()) {
        const at = `${mounted.exportPath}/${mounted.rest.slice(0, i + 1).join('/')}`
        try {
          const found = await client.lookup(root, name)
          if (found.attributes !== undefined && !found.attributes.isDirectory) throw new RemoteError('ENOTDIR', `open ${this.displayUrl}: "${at}" inside export "${mounted.exportPath}" is not a directory`)
          root = found.handle
        } catch (error) {
          if (error instanceof Nfs3StatusError) throw nfs3Error(error.status, 'open', at, this.displayUrl, error.proc)
          throw error
        }
      }
      const info = await client.fsinfo(root)
      // a server announcing 0 (invalid) gets our cap; anything else is honoured even if small
      const wsize = Math.min(this.maxBlockBytes, info.wtmax > 0 ? info.wtmax : this.maxBlockBytes)
      const rsize = Math.min(this.maxBlockBytes, info.rtmax > 0 ? info.rtmax : this.maxBlockBytes)
      const session: Session = { client, root, wsize, rsize, dirs: new Map([['', root]]) }
      if (generation !== this.generation) throw new RemoteError('ECONNRESET', `${this.displayUrl}: the remote was closed while connecting`)
      this.session = session
      await this.removeOrphans(session)
      return session
    } catch (error) {
      rpc.close()
      throw error
    }
  }

  private async removeOrphans(session: Session): Promise<void> {
    for (const path of [...this.orphans]) {
      try {
        const { dir, name } = await parentOf(session, path, false)
        await session.client.remove(dir, name)
      } catch (error) {
        if (!(error instanceof Nfs3StatusError && (error.status === NFS3ERR_NOENT || error.status === NFS3ERR_STALE))) continue // keep it for the next session
      }
      this.orphans.delete(path)
    }
  }

  /**
   * Runs `fn` on a live session. A stale cached directory handle is dropped and the call retried once.
   * An idempotent operation (lookups, reads, listings, mkdir -p, rmtree) whose connection was lost —
   * e.g. the server closed an idle connection just before — is retried once on a new session; others
   * (RENAME, REMOVE, CREATE) are not, since a lost reply does not say whether they happened.
   */
  private async withSession<T>(op: string, path: string, fn: (s: Session) => Promise<T>, idempotent = false): Promise<T> {
    const run = async (): Promise<T> => {
      const session = await this.getSession()
      try {
        return await fn(session)
      } catch (error) {
        if (error instanceof Nfs3StatusError && error.status === NFS3ERR_STALE && session.dirs.size > 1) {
          session.dirs = new Map([['', session.root]])
          return await fn(session)
        }
        throw error
      }
    }
    try {
      return await run()
    } catch (error) {
      if (idempotent && error instanceof RemoteError && error.code === 'ECONNRESET' && error.fields.path === undefined) {
        try {
          return await run()
        } catch (again) {
          throw this.mapError(again, op, path)
        }
      }
      throw this.mapError(error, op, path)
    }
  }

  protected override mapError(error: unknown, op: string, path: string): Error {
    if (error instanceof Nfs3StatusError) return nfs3Error(error.status, op, path, this.displayUrl, error.proc)
    // transport errors (connection lost, timeout) do not know the path: say which operation they broke
    if (error instanceof RemoteError && error.fields.path === undefined) {
      return new RemoteError(error.code as PosixCode | 'E_REMOTE', `${op} "${path}" failed: ${error.message}`, { cause: error, fields: { ...error.fields, op, path } })
    }
    return toRemoteError(error, op, path, this.displayUrl)
  }

  // ---------------------------------------------------------------- contract

  protected async _createWriteStream(target: WriteTarget, options: WriteStreamOptions): Promise<Writable> {
    const { path: rel, temporary: tmpRel } = target
    const { s, dir, fh } = await this.withSession('write', rel, async (s) => {
      const { dir } = await parentOf(s, rel, true)
      return { s, dir, fh: await s.client.create(dir, posix.basename(tmpRel), 0o644) }
    })
    const name = posix.basename(rel)
    const tmpName = posix.basename(tmpRel)
    const stream = new NfsWriteStream({
      label: `"${rel}" on ${this.displayUrl}`,
      window: this.window,
      blockBytes: s.wsize,
      commitEveryBytes: 2 * this.window * s.wsize,
      signal: options.signal,
      io: {
        write: (offset, data, count) => s.client.write(fh, offset, data, count, UNSTABLE),
        commit: () => s.client.commit(fh, 0, 0),
      },
      publish: async () => {
        if (options.exclusive === true) {
          try {
            await s.client.link(fh, dir, name) // NFS3ERR_EXIST when the final name exists: never replaced
          } catch (error) {
            if (!(error instanceof Nfs3StatusError && error.status === NFS3ERR_NOTSUPP)) throw error
            // no hard links on this server: check then rename (a concurrent writer could slip in between)
            const missing = await s.client.lookup(dir, name).then(
              () => undefined,
              (e: unknown) => e,
            )
            if (missing === undefined) throw new Nfs3StatusError(NFS3ERR_EXIST, 'LINK')
            if (!(missing instanceof Nfs3StatusError && missing.status === NFS3ERR_NOENT)) throw toError(missing)
            await s.client.rename(dir, tmpName, dir, name)
            this.countBytes('write', stream.bytesAccepted)
            return
          }
          await s.client.remove(dir, tmpName)
        } else {
          await s.client.rename(dir, tmpName, dir, name)
        }
        this.countBytes('write', stream.bytesAccepted)
      },
      discard: async () => {
        try {
          if (!s.client.rpc.alive) throw new Error('connection lost')
          await s.client.remove(dir, tmpName)
        } catch (error) {
          if (error instanceof Nfs3StatusError && error.status === NFS3ERR_NOENT) return
          this.orphans.add(tmpRel) // removed when the next session opens
        }
      },
      mapError: (e) => this.mapError(e, 'write', rel),
    })
    return stream
  }

  protected async _createReadStream(rel: string, range: ReadRange): Promise<Readable> {
    const { start, end } = range
    const { s, handle, attributes } = await this.withSession('read', rel, async (s) => ({ s, ...(await lookupPath(s, rel)) }), true)
    if (attributes.isDirectory) throw new RemoteError('EISDIR', `read "${rel}" on ${this.displayUrl}: it is a directory`)
    const stop = Math.min(attributes.size, end === undefined ? attributes.size : end + 1)
    const stream = new NfsReadStream({
      read: (offset, count) => s.client.read(handle, offset, count),
      start,
      end: Math.max(start, stop),
      blockBytes: s.rsize,
      window: Math.min(this.window, 4),
      mapError: (e) => this.mapError(e, 'read', rel),
      label: `"${rel}" on ${this.displayUrl}`,
      signal: range.signal,
    })
    let bytes = 0
    stream.on('data', (c: Uint8Array) => (bytes += c.length))
    stream.once('close', () => this.countBytes('read', bytes))
    return stream
  }

  protected async _list(rel: string, options: ListOptions): Promise<ListEntry[]> {
    return this.withSession('list', rel, async (s) => {
      const out: ListEntry[] = []
      const walk = async (dirRel: string, prefix: string): Promise<void> => {
        const handle = await dirHandle(s, dirRel, false)
        for (const e of await s.client.readdirplus(handle)) {
          if (options.includeHidden !== true && e.name.startsWith('.')) continue
          const p = prefix === '' ? e.name : `${prefix}/${e.name}`
          const isDirectory = e.attributes?.isDirectory ?? (await s.client.getattr(e.handle ?? (await s.client.lookup(handle, e.name)).handle)).isDirectory
          const childRel = dirRel === '' ? e.name : `${dirRel}/${e.name}`
          if (isDirectory && e.handle !== undefined) s.dirs.set(childRel, e.handle)
          if (isDirectory && options.recursive === true) await walk(childRel, p)
          else out.push({ path: p, isDirectory })
        }
      }
      await walk(rel, '')
      return out
    }, true)
  }

  protected async _stat(rel: string): Promise<RemoteStat> {
    return this.withSession('stat', rel, async (s) => {
      const { attributes: a } = await lookupPath(s, rel)
      return { size: a.isDirectory ? 0 : a.size, isDirectory: a.isDirectory, mtimeMs: a.mtimeMs }
    }, true)
  }

  protected async _rename(a: string, b: string): Promise<void> {
    await this.withSession('rename', `${a} -> ${b}`, async (s) => {
      const src = await parentOf(s, a, false)
      await s.client.lookup(src.dir, src.name) // ENOENT before creating the target's parents
      const dst = await parentOf(s, b, true)
      await s.client.rename(src.dir, src.name, dst.dir, dst.name)
      forgetDirs(s, a)
    })
  }

  protected async _unlink(rel: string): Promise<void> {
    await this.withSession('unlink', rel, async (s) => {
      const { dir, name } = await parentOf(s, rel, false)
      const found = await s.client.lookup(dir, name)
      if (found.attributes?.isDirectory === true) throw new RemoteError('EISDIR', `unlink "${rel}" on ${this.displayUrl}: it is a directory (use rmtree)`)
      await s.client.remove(dir, name)
    })
  }

  protected async _rmtree(rel: string): Promise<void> {
    await this.withSession('rmtree', rel, async (s) => {
      let target: { dir: Uint8Array; name: string }
      let handle: Uint8Array
      let isDirectory: boolean
      try {
        target = await parentOf(s, rel, false)
        const found = await s.client.lookup(target.dir, target.name)
        handle = found.handle
        isDirectory = found.attributes?.isDirectory ?? (await s.client.getattr(handle)).isDirectory
      } catch (error) {
        if (error instanceof Nfs3StatusError && error.status === NFS3ERR_NOENT) return
        throw error
      }
      if (isDirectory) await emptyDir(s, handle)
      await (isDirectory ? s.client.rmdir(target.dir, target.name) : s.client.remove(target.dir, target.name))
      forgetDirs(s, rel)
    }, true)
  }

  protected async _mkdir(rel: string): Promise<void> {
    await this.withSession('mkdir', rel, async (s) => {
      if (rel !== '') await dirHandle(s, rel, true)
    }, true)
  }
}

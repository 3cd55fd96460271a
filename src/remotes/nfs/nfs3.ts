/**
 * Typed NFSv3 procedures (RFC 1813) over one RpcConnection, encoded and decoded with
 * `@jsonjoy.com/json-pack`'s Nfsv3Encoder/Nfsv3Decoder. Each method returns the fields the remote
 * needs, or throws an `Nfs3StatusError` carrying the NFS status (the remote turns it into a RemoteError
 * with the path it was working on). WRITE sends its data without copying it (see rpc.ts).
 */
import type { Writer } from '@jsonjoy.com/buffers/lib/Writer.js'
import type { Reader } from '@jsonjoy.com/buffers/lib/Reader.js'
import { Nfsv3Encoder } from '@jsonjoy.com/json-pack/lib/nfs/v3/Nfsv3Encoder.js'
import { Nfsv3Decoder } from '@jsonjoy.com/json-pack/lib/nfs/v3/Nfsv3Decoder.js'
import * as m from '@jsonjoy.com/json-pack/lib/nfs/v3/messages.js'
import * as s from '@jsonjoy.com/json-pack/lib/nfs/v3/structs.js'
import type { Nfsv3CreateMode, Nfsv3StableHow, Nfsv3TimeHow } from '@jsonjoy.com/json-pack/lib/nfs/v3/constants.js'
import { RemoteError } from '../../common/errors.js'
import { NFS_PROGRAM } from './mount.js'
import type { RpcConnection } from './rpc.js'
import { nfs3StatusName } from './status.js'

const P = {
  GETATTR: 1,
  LOOKUP: 3,
  READ: 6,
  WRITE: 7,
  CREATE: 8,
  MKDIR: 9,
  REMOVE: 12,
  RMDIR: 13,
  RENAME: 14,
  LINK: 15,
  READDIRPLUS: 17,
  FSINFO: 19,
  COMMIT: 21,
} as const

const NF3DIR = 2
export const UNSTABLE = 0 as Nfsv3StableHow
const GUARDED = 1 as Nfsv3CreateMode
const DONT_CHANGE = 0 as Nfsv3TimeHow
const EMPTY = new Uint8Array(0)

/** An NFS3 status other than NFS3_OK; `status` is the nfsstat3 value. */
export class Nfs3StatusError extends Error {
  constructor(
    readonly status: number,
    readonly proc: string,
  ) {
    super(`${proc} failed: ${nfs3StatusName(status)}`)
  }
}

export interface Attributes {
  isDirectory: boolean
  size: number
  mtimeMs: number
}

interface DirEntry {
  name: string
  attributes: Attributes | undefined
  handle: Uint8Array | undefined
}

interface FsInfo {
  rtmax: number
  wtmax: number
  dtpref: number
}

export interface WriteResult {
  count: number
  /** stable_how the server committed with (2 = FILE_SYNC) */
  committed: number
  /** the server's write verifier, hex */
  verifier: string
}

function attributes(fattr: s.Nfsv3Fattr): Attributes {
  return {
    isDirectory: (fattr.type as number) === NF3DIR,
    size: Number(fattr.size),
    mtimeMs: fattr.mtime.seconds * 1000 + Math.floor(fattr.mtime.nseconds / 1e6),
  }
}

function postOp(attr: s.Nfsv3PostOpAttr): Attributes | undefined {
  return attr.attributesFollow && attr.attributes !== undefined ? attributes(attr.attributes) : undefined
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('hex')
}

function emptySattr(mode: number): s.Nfsv3Sattr {
  return new s.Nfsv3Sattr(
    new s.Nfsv3SetMode(true, mode),
    new s.Nfsv3SetUid(false),
    new s.Nfsv3SetGid(false),
    new s.Nfsv3SetSize(false),
    new s.Nfsv3SetAtime(DONT_CHANGE),
    new s.Nfsv3SetMtime(DONT_CHANGE),
  )
}

export class Nfs3Client {
  private readonly decoder = new Nfsv3Decoder()

  constructor(
    readonly rpc: RpcConnection,
    private readonly label: string,
  ) {}

  private async call<R extends m.Nfsv3Response>(proc: number, name: string, request: m.Nfsv3Request, type: abstract new (...args: never[]) => R, payload?: readonly Uint8Array[]): Promise<R> {
    const reader: Reader = await this.rpc.call(NFS_PROGRAM, 3, proc, `NFS ${name}`, (w: Writer) => {
      new Nfsv3Encoder(w).writeMessage(request, proc, true)
    }, payload)
    const res = this.decoder.decodeMessage(reader, proc, false)
    if (!(res instanceof type)) throw new RemoteError('EIO', `NFS ${name} on ${this.label}: undecodable reply`, { fields: { detail: `bad ${name} reply` } })
    const status = (res as { status: number }).status
    if (status !== 0) throw new Nfs3StatusError(status, name)
    return res
  }

  async getattr(fh: Uint8Array): Promise<Attributes> {
    const res = await this.call(P.GETATTR, 'GETATTR', new m.Nfsv3GetattrRequest(new s.Nfsv3Fh(fh)), m.Nfsv3GetattrResponse)
    return attributes(res.resok!.objAttributes)
  }

  async lookup(dir: Uint8Array, name: string): Promise<{ handle: Uint8Array; attributes: Attributes | undefined }> {
    const res = await this.call(P.LOOKUP, 'LOOKUP', new m.Nfsv3LookupRequest(new s.Nfsv3DirOpArgs(new s.Nfsv3Fh(dir), name)), m.Nfsv3LookupResponse)
    return { handle: res.resok!.object.data.slice(), attributes: postOp(res.resok!.objAttributes) }
  }

  /** CREATE GUARDED (EEXIST when the name exists); returns the new file's handle. */
  async create(dir: Uint8Array, name: string, mode = 0o644): Promise<Uint8Array> {
    const how = new s.Nfsv3CreateHow(GUARDED, emptySattr(mode))
    const res = await this.call(P.CREATE, 'CREATE', new m.Nfsv3CreateRequest(new s.Nfsv3DirOpArgs(new s.Nfsv3Fh(dir), name), how), m.Nfsv3CreateResponse)
    const fh = res.resok!.obj
    if (fh.handleFollows && fh.handle !== undefined) return fh.handle.data.slice()
    return (await this.lookup(dir, name)).handle
  }

  async mkdir(dir: Uint8Array, name: string, mode = 0o755): Promise<Uint8Array> {
    const res = await this.call(P.MKDIR, 'MKDIR', new m.Nfsv3MkdirRequest(new s.Nfsv3DirOpArgs(new s.Nfsv3Fh(dir), name), emptySattr(mode)), m.Nfsv3MkdirResponse)
    const fh = res.resok!.obj
    if (fh.handleFollows && fh.handle !== undefined) return fh.handle.data.slice()
    return (await this.lookup(dir, name)).handle
  }

  /**
   * WRITE of the concatenation of `data` at `offset`. The arguments are encoded with an empty opaque
   * whose length word is then patched: WRITE3args ends with `opaque data<>` (RFC 1813 §3.3.7), so the
   * bytes can follow the header as they are.
   */
  async write(fh: Uint8Array, offset: number, data: readonly Uint8Array[], count: number, stable: Nfsv3StableHow): Promise<WriteResult> {
    const request = new m.Nfsv3WriteRequest(new s.Nfsv3Fh(fh), BigInt(offset), count, stable, EMPTY)
    const reader = await this.rpc.call(NFS_PROGRAM, 3, P.WRITE, 'NFS WRITE', (w: Writer) => {
      new Nfsv3Encoder(w).writeMessage(request, P.WRITE, true)
      w.view.setUint32(w.x - 4, count) // the opaque's length word
    }, data)
    const res = this.decoder.decodeMessage(reader, P.WRITE, false)
    if (!(res instanceof m.Nfsv3WriteResponse)) throw new RemoteError('EIO', `NFS WRITE on ${this.label}: undecodable reply`, { fields: { detail: 'bad WRITE reply' } })
    if ((res.status as number) !== 0) throw new Nfs3StatusError(res.status, 'WRITE')
    const ok = res.resok!
    return { count: ok.count, committed: ok.committed, verifier: hex(ok.verf) }
  }

  /** COMMIT of [offset, offset+count) (count 0: to the end); returns the verifier, hex. */
  async commit(fh: Uint8Array, offset: number, count: number): Promise<string> {
    const res = await this.call(P.COMMIT, 'COMMIT', new m.Nfsv3CommitRequest(new s.Nfsv3Fh(fh), BigInt(offset), count), m.Nfsv3CommitResponse)
    return hex(res.resok!.verf)
  }

  /** READ; `data` is a view on the received record (no copy). */
  async read(fh: Uint8Array, offset: number, count: number): Promise<{ data: Uint8Array; eof: boolean }> {
    const res = await this.call(P.READ, 'READ', new m.Nfsv3ReadRequest(new s.Nfsv3Fh(fh), BigInt(offset), count), m.Nfsv3ReadResponse)
    return { data: res.resok!.data, eof: res.resok!.eof }
  }

  async remove(dir: Uint8Array, name: string): Promise<void> {
    await this.call(P.REMOVE, 'REMOVE', new m.Nfsv3RemoveRequest(new s.Nfsv3DirOpArgs(new s.Nfsv3Fh(dir), name)), m.Nfsv3RemoveResponse)
  }

  async rmdir(dir: Uint8Array, name: string): Promise<void> {
    await this.call(P.RMDIR, 'RMDIR', new m.Nfsv3RmdirRequest(new s.Nfsv3DirOpArgs(new s.Nfsv3Fh(dir), name)), m.Nfsv3RmdirResponse)
  }

  async rename(fromDir: Uint8Array, fromName: string, toDir: Uint8Array, toName: string): Promise<void> {
    const req = new m.Nfsv3RenameRequest(new s.Nfsv3DirOpArgs(new s.Nfsv3Fh(fromDir), fromName), new s.Nfsv3DirOpArgs(new s.Nfsv3Fh(toDir), toName))
    await this.call(P.RENAME, 'RENAME', req, m.Nfsv3RenameResponse)
  }

  /** LINK: a new name for `file`; EEXIST when the name exists (used for exclusive publishes). */
  async link(file: Uint8Array, dir: Uint8Array, name: string): Promise<void> {
    await this.call(P.LINK, 'LINK', new m.Nfsv3LinkRequest(new s.Nfsv3Fh(file), new s.Nfsv3DirOpArgs(new s.Nfsv3Fh(dir), name)), m.Nfsv3LinkResponse)
  }

  /** Every entry of a directory except `.` and `..`, following READDIRPLUS cookies. */
  async readdirplus(dir: Uint8Array): Promise<DirEntry[]> {
    const out: DirEntry[] = []
    let cookie = 0n
    let verifier: Uint8Array = new Uint8Array(8)
    for (;;) {
      const req = new m.Nfsv3ReaddirplusRequest(new s.Nfsv3Fh(dir), cookie, verifier, 16 * 1024, 64 * 1024)
      const res = await this.call(P.READDIRPLUS, 'READDIRPLUS', req, m.Nfsv3ReaddirplusResponse)
      const ok = res.resok!
      verifier = ok.cookieverf.slice()
      let last: s.Nfsv3EntryPlus | undefined
      for (let e = ok.reply.entries; e !== undefined; e = e.nextentry) {
        last = e
        if (e.name === '.' || e.name === '..') continue
        const fh = e.nameHandle
        out.push({ name: e.name, attributes: postOp(e.nameAttributes), handle: fh.handleFollows && fh.handle !== undefined ? fh.handle.data.slice() : undefined })
      }
      if (ok.reply.eof || last === undefined) return out
      cookie = last.cookie
    }
  }

  async fsinfo(root: Uint8Array): Promise<FsInfo> {
    const res = await this.call(P.FSINFO, 'FSINFO', new m.Nfsv3FsinfoRequest(new s.Nfsv3Fh(root)), m.Nfsv3FsinfoResponse)
    const ok = res.resok!
    return { rtmax: ok.rtmax, wtmax: ok.wtmax, dtpref: ok.dtpref }
  }
}

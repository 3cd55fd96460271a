/**
 * ONC-RPC (RFC 5531) client over one TCP connection, with record marking (RFC 5531 §11) and AUTH_SYS
 * credentials. Calls are pipelined: each gets an xid, is written at once, and its reply is matched by
 * xid whatever order the server answers in, so many WRITEs or READs can be in flight.
 *
 * Message headers and bodies are encoded with `@jsonjoy.com/json-pack` (its RpcMessageEncoder and the
 * program encoders write into one growable Writer per connection). Record marking is done here rather
 * than with its FullNfsv3Encoder, whose header offset is wrong once the Writer grows mid-frame (see the
 * notes): the header is patched into the flushed frame, whose start does not move, and room for a whole
 * call is reserved before encoding so the Writer never grows mid-frame (json-pack's XdrEncoder.writeStr
 * has the same absolute-offset bug as its record marker). Bulk payloads
 * (WRITE data) are not copied into the Writer: the caller encodes the arguments with an empty trailing
 * opaque and passes the data as `payload`, which is sent right after the header with its XDR padding.
 *
 * Any socket error, timeout or undecodable reply destroys the connection and fails every pending call
 * with a RemoteError (ECONNRESET / ETIMEDOUT); the owner reconnects with a new RpcConnection.
 */
import { connect, type Socket } from 'node:net'
import { Writer } from '@jsonjoy.com/buffers/lib/Writer.js'
import { Reader } from '@jsonjoy.com/buffers/lib/Reader.js'
import { RpcMessageEncoder, RpcMessageDecoder, RpcOpaqueAuth, RpcAcceptedReplyMessage, RpcRejectedReplyMessage } from '@jsonjoy.com/json-pack/lib/rpc/index.js'
import type { RpcAuthFlavor } from '@jsonjoy.com/json-pack/lib/rpc/index.js'
import { RemoteError } from '../../common/errors.js'

const AUTH_NONE = 0 as RpcAuthFlavor
const AUTH_SYS = 1 as RpcAuthFlavor
const LAST_FRAGMENT = 0x80000000
/** refuse records larger than this (a READ reply is at most rtmax + headers) */
const MAX_RECORD_BYTES = 64 * 1024 * 1024
const PADDING = new Uint8Array(4)
/** room reserved in the Writer before encoding a call (arguments without bulk payload are far smaller) */
const MAX_CALL_HEADER_BYTES = 16 * 1024

const ACCEPT_STAT: Record<number, string> = {
  1: 'PROG_UNAVAIL (the server does not run this program)',
  2: 'PROG_MISMATCH (the server does not support this version)',
  3: 'PROC_UNAVAIL',
  4: 'GARBAGE_ARGS (the server could not decode the call)',
  5: 'SYSTEM_ERR',
}
const AUTH_STAT: Record<number, string> = {
  1: 'AUTH_BADCRED',
  2: 'AUTH_REJECTEDCRED',
  3: 'AUTH_BADVERF',
  4: 'AUTH_REJECTEDVERF',
  5: 'AUTH_TOOWEAK (the export requires another security flavor than AUTH_SYS)',
}

export interface AuthSys {
  uid: number
  gid: number
  /** supplementary groups (at most 16) */
  gids?: readonly number[]
  machineName: string
}

interface RpcConnectionOptions {
  host: string
  port: number
  /** AUTH_SYS credentials; AUTH_NONE when absent (portmapper) */
  auth?: AuthSys
  /** a call without reply for this long fails and kills the connection */
  callTimeoutMs: number
  connectTimeoutMs: number
  /** for error messages, e.g. `nfs://host:/export` */
  label: string
}

interface Pending {
  resolve: (reader: Reader) => void
  reject: (error: Error) => void
  timer: NodeJS.Timeout
  what: string
}

function encodeAuthSys(auth: AuthSys): Uint8Array {
  const w = new Writer(512)
  const name = Buffer.from(auth.machineName.slice(0, 255), 'utf8')
  w.u32(Math.floor(Date.now() / 1000) >>> 0)
  w.u32(name.length)
  w.buf(name, name.length)
  for (let i = name.length; i % 4 !== 0; i++) w.u8(0)
  w.u32(auth.uid >>> 0)
  w.u32(auth.gid >>> 0)
  const gids = (auth.gids ?? []).slice(0, 16)
  w.u32(gids.length)
  for (const g of gids) w.u32(g >>> 0)
  return w.flush().slice()
}

/** Opens a TCP connection; rejects with ECONNRESET / ETIMEDOUT and a message naming the endpoint. */
async function openSocket(host: string, port: number, timeoutMs: number, what: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, noDelay: true })
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new RemoteError('ETIMEDOUT', `${what}: no TCP connection to ${host}:${port} after ${timeoutMs} ms; check the host, the port and firewalls`, { fields: { host, port, detail: 'connect timeout' } }))
    }, timeoutMs)
    socket.once('connect', () => {
      clearTimeout(timer)
      socket.setKeepAlive(true, 30_000) // notice a dead server between calls, not only during one
      socket.removeAllListeners('error')
      resolve(socket)
    })
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      reject(new RemoteError('ECONNRESET', `${what}: cannot connect to ${host}:${port} (${error.code ?? error.message}); check that the server runs and is reachable`, { cause: error, fields: { host, port, detail: error.code ?? 'connect' } }))
    })
  })
}

export class RpcConnection {
  private readonly socket: Socket
  private readonly writer = new Writer(256 * 1024)
  private readonly rpcEncoder = new RpcMessageEncoder(this.writer)
  private readonly rpcDecoder = new RpcMessageDecoder()
  private readonly cred: RpcOpaqueAuth
  private readonly verf = new RpcOpaqueAuth(AUTH_NONE, new Reader(new Uint8Array(0)))
  private readonly pending = new Map<number, Pending>()
  private nextXid = (Math.random() * 0x7fffffff) >>> 0
  /** received bytes not yet consumed, as a list (joined only when a record spans chunks) */
  private chunks: Buffer[] = []
  private chunkBytes = 0
  /** fragments of the record being assembled */
  private fragments: Buffer[] = []
  private fragmentBytes = 0
  private failure: RemoteError | undefined
  private readonly closeListeners: ((error: RemoteError) => void)[] = []

  private constructor(
    socket: Socket,
    private readonly options: RpcConnectionOptions,
  ) {
    this.socket = socket
    this.cred = options.auth === undefined ? this.verf : new RpcOpaqueAuth(AUTH_SYS, new Reader(encodeAuthSys(options.auth)))
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('error', (error: NodeJS.ErrnoException) => {
      this.fail(new RemoteError('ECONNRESET', `connection to ${options.label} (${options.host}:${options.port}) failed: ${error.code ?? error.message}`, { cause: error, fields: { detail: error.code ?? 'socket error' } }))
    })
    socket.on('close', () => {
      this.fail(new RemoteError('ECONNRESET', `connection to ${options.label} (${options.host}:${options.port}) was closed by the server`, { fields: { detail: 'closed' } }))
    })
  }

  static async open(options: RpcConnectionOptions): Promise<RpcConnection> {
    const socket = await openSocket(options.host, options.port, options.connectTimeoutMs, options.label)
    return new RpcConnection(socket, options)
  }

  /** True until the connection failed or was closed. */
  get alive(): boolean {
    return this.failure === undefined
  }

  /** Called once when the connection dies (not after close()). */
  onClose(listener: (error: RemoteError) => void): void {
    this.closeListeners.push(listener)
  }

  /**
   * Sends one call and resolves with a Reader positioned on the procedure's results. `writeArgs`
   * encodes the arguments into the Writer; `payload` (optional) is appended after them as raw bytes
   * with XDR padding, the caller having encoded its length as the last argument word.
   */
  async call(prog: number, vers: number, proc: number, what: string, writeArgs: (writer: Writer) => void, payload?: readonly Uint8Array[]): Promise<Reader> {
    if (this.failure !== undefined) throw this.failure
    const xid = (this.nextXid = (this.nextXid + 1) >>> 0)
    const w = this.writer
    // json-pack's encoders remember absolute Writer offsets while encoding (XdrEncoder.writeStr's length
    // word, FullNfsv3Encoder's record mark); if the Writer grows mid-frame those offsets point into the
    // old buffer and the frame goes out corrupted (seen as NFS3ERR_INVAL / BADHANDLE on ~1 CREATE in
    // 4000). Calls without payload are a few hundred bytes: make room for any of them before encoding.
    w.ensureCapacity(MAX_CALL_HEADER_BYTES)
    w.u32(0) // record mark, patched below
    this.rpcEncoder.writeCall(xid, prog, vers, proc, this.cred, this.verf)
    writeArgs(w)
    const frame = w.flush()
    if (frame.length > MAX_CALL_HEADER_BYTES) throw new RemoteError('EINVAL', `${what}: call of ${frame.length} bytes exceeds ${MAX_CALL_HEADER_BYTES} (bulk data must go as payload)`, { fields: { detail: 'call too large' } })
    let payloadBytes = 0
    for (const p of payload ?? []) payloadBytes += p.length
    const pad = (4 - (payloadBytes % 4)) % 4
    new DataView(frame.buffer, frame.byteOffset, 4).setUint32(0, (LAST_FRAGMENT | (frame.length - 4 + payloadBytes + pad)) >>> 0)
    return new Promise<Reader>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(new RemoteError('ETIMEDOUT', `${what} on ${this.options.label}: no reply after ${this.options.callTimeoutMs} ms; the server is overloaded or unreachable`, { fields: { detail: 'rpc timeout' } }))
      }, this.options.callTimeoutMs)
      this.pending.set(xid, { resolve, reject, timer, what })
      const socket = this.socket
      if (payload === undefined) {
        socket.write(frame)
      } else {
        socket.cork()
        socket.write(frame)
        for (const p of payload) socket.write(p)
        if (pad > 0) socket.write(PADDING.subarray(0, pad))
        socket.uncork()
      }
    })
  }

  /** Closes the connection: pending calls fail with ECONNRESET. */
  close(): void {
    if (this.failure === undefined) {
      this.failure = new RemoteError('ECONNRESET', `connection to ${this.options.label} was closed by this client`, { fields: { detail: 'closed locally' } })
      this.rejectAll(this.failure)
    }
    this.socket.destroy()
  }

  private fail(error: RemoteError): void {
    if (this.failure !== undefined) return
    this.failure = error
    this.socket.destroy()
    this.rejectAll(error)
    for (const l of this.closeListeners) l(error)
  }

  private rejectAll(error: RemoteError): void {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer)
      p.reject(error)
    }
    this.pending.clear()
  }

  private onData(chunk: Buffer): void {
    this.chunks.push(chunk)
    this.chunkBytes += chunk.length
    try {
      while (this.chunkBytes >= 4) {
        const head = this.peek4()
        const length = head & 0x7fffffff
        if (this.fragmentBytes + length > MAX_RECORD_BYTES) throw new Error(`record of ${this.fragmentBytes + length} bytes exceeds ${MAX_RECORD_BYTES}`)
        if (this.chunkBytes < 4 + length) return
        this.take(4)
        const fragment = this.take(length)
        if ((head & LAST_FRAGMENT) === 0) {
          this.fragments.push(fragment)
          this.fragmentBytes += length
          continue
        }
        let record = fragment
        if (this.fragments.length > 0) {
          this.fragments.push(fragment)
          record = Buffer.concat(this.fragments, this.fragmentBytes + length)
          this.fragments = []
          this.fragmentBytes = 0
        }
        this.onRecord(record)
      }
    } catch (error) {
      this.fail(new RemoteError('EIO', `undecodable reply from ${this.options.label}: ${(error as Error).message}`, { cause: error, fields: { detail: 'bad reply' } }))
    }
  }

  private peek4(): number {
    const first = this.chunks[0]!
    if (first.length >= 4) return first.readUInt32BE(0)
    const head = Buffer.alloc(4)
    let filled = 0
    for (const c of this.chunks) {
      filled += c.copy(head, filled, 0, Math.min(c.length, 4 - filled))
      if (filled === 4) break
    }
    return head.readUInt32BE(0)
  }

  /** Removes `n` bytes from the front of the received chunks; zero-copy when they sit in one chunk. */
  private take(n: number): Buffer {
    this.chunkBytes -= n
    const first = this.chunks[0]!
    if (first.length > n) {
      this.chunks[0] = first.subarray(n)
      return first.subarray(0, n)
    }
    if (first.length === n) {
      this.chunks.shift()
      return first
    }
    const out = Buffer.allocUnsafe(n)
    let filled = 0
    while (filled < n) {
      const c = this.chunks[0]!
      const k = Math.min(c.length, n - filled)
      c.copy(out, filled, 0, k)
      filled += k
      if (k === c.length) this.chunks.shift()
      else this.chunks[0] = c.subarray(k)
    }
    return out
  }

  private onRecord(record: Buffer): void {
    const reader = new Reader(record)
    const message = this.rpcDecoder.decodeMessage(reader)
    if (message === undefined) throw new Error('truncated RPC reply')
    const pending = this.pending.get(message.xid)
    if (pending === undefined) return // reply to a call that already timed out: ignore
    this.pending.delete(message.xid)
    clearTimeout(pending.timer)
    if (message instanceof RpcAcceptedReplyMessage) {
      if ((message.stat as number) === 0) {
        pending.resolve(message.results ?? new Reader(new Uint8Array(0)))
        return
      }
      const what = ACCEPT_STAT[message.stat] ?? `accept status ${message.stat}`
      pending.reject(new RemoteError('EIO', `${pending.what} on ${this.options.label}: the server refused the call: ${what}`, { fields: { detail: `rpc accept_stat ${message.stat}` } }))
    } else if (message instanceof RpcRejectedReplyMessage) {
      const auth = message.authStat === undefined ? '' : (AUTH_STAT[message.authStat] ?? `auth status ${message.authStat}`)
      const denied = message.stat as number
      const text = denied === 1 ? `authentication refused: ${auth}; check the export's SecType and the uid/gid options` : 'RPC version mismatch'
      pending.reject(new RemoteError('EACCES', `${pending.what} on ${this.options.label}: ${text}`, { fields: { detail: denied === 1 ? auth : 'RPC_MISMATCH' } }))
    } else {
      throw new Error(`unexpected RPC call message (xid ${message.xid}) from the server`)
    }
  }
}

/**
 * An NBD client for XAPI's NBD server, one connection: fixed newstyle negotiation, NBD_OPT_STARTTLS when
 * `VDI.get_nbd_info` gave a certificate (the server must present exactly that certificate: it is pinned,
 * not checked against a CA, since XAPI hosts use self-signed ones), NBD_OPT_GO (NBD_OPT_EXPORT_NAME when
 * the server does not know GO), then pipelined NBD_CMD_READs with simple replies read into the caller's
 * buffers (pooled VHD block buffers: one copy, from the socket).
 *
 * Written here rather than using XO's @vates/nbd-client (published on npm): that client does not verify
 * the server certificate (rejectUnauthorized false, the certificate is sent as a client certificate), its
 * errors carry no stable code, every read allocates its own buffer, and it brings promise-toolbox,
 * @xen-orchestra/log and disk-transform with it. Retries and the several connections of a disk are in
 * multi.ts. Errors: E_NBD_UNREACHABLE (connect), E_NBD_TLS (certificate), E_NBD_NEGOTIATION (handshake),
 * E_NBD_READ (a read: reset, error reply). The export name holds a XAPI session id: never logged.
 */
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { X509Certificate } from 'node:crypto'
import { BackupProxyError, CancelledError } from '../../common/errors.js'
import {
  CMD_DISC, CMD_READ, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, INFO_EXPORT, NBD_MAGIC, OPT_EXPORT_NAME, OPT_GO, OPT_REPLY_MAGIC, OPT_STARTTLS,
  REP_ACK, REP_ERR_UNSUP, REP_INFO, SIMPLE_REPLY_BYTES, SIMPLE_REPLY_MAGIC, encodeOption, encodeRequest,
} from './protocol.js'
import { SocketReader } from './reader.js'

/** One record of `VDI.get_nbd_info`. */
export interface NbdServerInfo {
  address: string
  port: number
  /** `/<vdi uuid>?session_id=<session>`: a secret */
  exportname: string
  /** PEM of the host certificate; '' for an insecure_nbd network (no TLS) */
  cert: string
  subject?: string
}

export interface NbdConnectOptions {
  signal?: AbortSignal
  /** connect + negotiation; default 60 s (XO's) */
  timeoutMs?: number
  /** a read with no data for this long fails; default 5 minutes (the HTTP export's) */
  inactivityTimeoutMs?: number
}

interface PendingRead {
  target: Buffer
  resolve: (b: Buffer) => void
  reject: (e: Error) => void
}

function where(info: NbdServerInfo): string {
  return `${info.address}:${info.port}`
}

async function openSocket(info: NbdServerInfo, signal: AbortSignal | undefined): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: info.address, port: info.port, ...(signal === undefined ? {} : { signal }) })
    socket.setNoDelay(true)
    socket.once('connect', () => {
      socket.off('error', onError)
      resolve(socket)
    })
    const onError = (e: Error): void => {
      if (signal?.aborted === true) return reject(new CancelledError('the NBD connection was cancelled', { cause: signal.reason }))
      reject(new BackupProxyError('E_NBD_UNREACHABLE', `cannot connect to the NBD server ${where(info)}: ${e.message}; check the network with the NBD purpose and port ${info.port}`, { cause: e, fields: { address: info.address, port: info.port } }))
    }
    socket.once('error', onError)
  })
}

/** Upgrades to TLS and checks the server presents exactly the certificate XAPI gave. */
async function startTls(socket: Socket, info: NbdServerInfo): Promise<TLSSocket> {
  let expected: X509Certificate
  try {
    expected = new X509Certificate(info.cert)
  } catch (error) {
    throw new BackupProxyError('E_NBD_TLS', `the certificate VDI.get_nbd_info returned for ${where(info)} cannot be parsed`, { cause: error })
  }
  const secure = await new Promise<TLSSocket>((resolve, reject) => {
    const s = tlsConnect({ socket, rejectUnauthorized: false, servername: info.subject !== undefined && info.subject !== '' && !/^[\d.:]+$/.test(info.subject) ? info.subject : undefined })
    s.once('secureConnect', () => resolve(s))
    s.once('error', (e: Error) => reject(new BackupProxyError('E_NBD_TLS', `TLS handshake with the NBD server ${where(info)} failed: ${e.message}`, { cause: e })))
  })
  const presented = secure.getPeerX509Certificate()
  if (presented === undefined || !Buffer.from(presented.raw).equals(Buffer.from(expected.raw))) {
    secure.destroy()
    throw new BackupProxyError('E_NBD_TLS', `the NBD server ${where(info)} presented a certificate (${presented?.fingerprint256 ?? 'none'}) other than the one XAPI gave (${expected.fingerprint256}); check the host certificate`, {
      fields: { address: info.address, port: info.port },
    })
  }
  return secure
}

export class NbdConnection {
  #nextHandle = 1n
  readonly #pending = new Map<bigint, PendingRead>()
  #looping = false
  #error: Error | undefined

  private constructor(
    private socket: Socket,
    private reader: SocketReader,
    readonly sizeBytes: number,
    readonly where: string,
    inactivityTimeoutMs: number,
  ) {
    // a server that stops answering a read fails it (then multi.ts reconnects), as the HTTP export does
    socket.setTimeout(inactivityTimeoutMs, () => {
      if (this.#pending.size > 0) socket.destroy(new Error(`no data for ${inactivityTimeoutMs} ms`))
    })
  }

  static async open(info: NbdServerInfo, options: NbdConnectOptions = {}): Promise<NbdConnection> {
    const timeoutMs = options.timeoutMs ?? 60_000
    const timeout = AbortSignal.timeout(timeoutMs)
    const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout])
    let socket = await openSocket(info, signal)
    const onAbort = (): void => void socket.destroy()
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      let reader = new SocketReader(socket)
      const fail = (message: string, cause?: unknown): BackupProxyError =>
        new BackupProxyError('E_NBD_NEGOTIATION', `NBD server ${where(info)}: ${message}`, { ...(cause === undefined ? {} : { cause }), fields: { address: info.address, port: info.port } })
      const greeting = await reader.read(18)
      if (!greeting.subarray(0, 8).equals(NBD_MAGIC) || !greeting.subarray(8, 16).equals(IHAVEOPT)) throw fail('not a newstyle NBD server')
      const serverFlags = greeting.readUInt16BE(16)
      if ((serverFlags & FLAG_FIXED_NEWSTYLE) === 0) throw fail('the server does not speak fixed newstyle')
      const noZeroes = (serverFlags & FLAG_NO_ZEROES) !== 0
      const clientFlags = Buffer.alloc(4)
      clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (noZeroes ? FLAG_NO_ZEROES : 0))
      socket.write(clientFlags)
      const optionReply = async (option: number): Promise<{ type: number; data: Buffer }> => {
        const h = await reader.read(20)
        if (h.readBigUInt64BE(0) !== OPT_REPLY_MAGIC || h.readUInt32BE(8) !== option) throw fail('bad option reply')
        return { type: h.readUInt32BE(12), data: await reader.read(h.readUInt32BE(16)) }
      }
      if (info.cert !== '') {
        socket.write(encodeOption(OPT_STARTTLS))
        const r = await optionReply(OPT_STARTTLS)
        if (r.type !== REP_ACK) throw new BackupProxyError('E_NBD_TLS', `NBD server ${where(info)} refused STARTTLS (reply ${r.type}) though XAPI gave a certificate`)
        reader.detach()
        socket = await startTls(socket, info)
        reader = new SocketReader(socket)
      }
      const name = Buffer.from(info.exportname, 'utf8')
      const go = Buffer.alloc(4 + name.length + 4)
      go.writeUInt32BE(name.length, 0)
      name.copy(go, 4)
      go.writeUInt16BE(1, 4 + name.length)
      go.writeUInt16BE(INFO_EXPORT, 6 + name.length)
      socket.write(encodeOption(OPT_GO, go))
      let size: number | undefined
      for (;;) {
        const r = await optionReply(OPT_GO)
        if (r.type === REP_INFO && r.data.length >= 12 && r.data.readUInt16BE(0) === INFO_EXPORT) size = Number(r.data.readBigUInt64BE(2))
        else if (r.type === REP_ACK) break
        else if (r.type === REP_ERR_UNSUP) {
          // a server without GO: the old way, which ends negotiation at once
          socket.write(encodeOption(OPT_EXPORT_NAME, name))
          const answer = await reader.read(noZeroes ? 10 : 134).catch((e: unknown) => Promise.reject(fail('the export was refused (unknown VDI or expired session)', e)))
          size = Number(answer.readBigUInt64BE(0))
          break
        } else if (r.type >= 0x8000_0000) throw fail(`the export was refused (error ${r.type - 0x8000_0000}${r.data.length > 0 ? `: ${r.data.toString('utf8').slice(0, 200)}` : ''})`)
      }
      if (size === undefined) throw fail('no export size in the reply')
      signal.removeEventListener('abort', onAbort)
      return new NbdConnection(socket, reader, size, where(info), options.inactivityTimeoutMs ?? 5 * 60_000)
    } catch (error) {
      signal.removeEventListener('abort', onAbort)
      socket.destroy()
      if (options.signal?.aborted === true) throw new CancelledError('the NBD connection was cancelled', { cause: options.signal.reason })
      if (timeout.aborted) throw new BackupProxyError('E_NBD_UNREACHABLE', `NBD server ${where(info)} did not complete the handshake within ${timeoutMs} ms`, { cause: error })
      if (error instanceof BackupProxyError) throw error
      throw new BackupProxyError('E_NBD_NEGOTIATION', `NBD negotiation with ${where(info)} failed: ${(error as Error).message}`, { cause: error })
    }
  }

  /** Reads `target.length` bytes at `offset` into `target` (pipelined: call again before it resolves). */
  read(offset: number, target: Buffer): Promise<Buffer> {
    if (this.#error !== undefined) return Promise.reject(this.#error)
    if (offset + target.length > this.sizeBytes) return Promise.reject(new RangeError(`NBD read [${offset}, +${target.length}) beyond the ${this.sizeBytes}-byte export`))
    const handle = this.#nextHandle++
    return new Promise((resolve, reject) => {
      this.#pending.set(handle, { target, resolve, reject })
      this.socket.write(encodeRequest(CMD_READ, handle, offset, target.length))
      if (!this.#looping) void this.#replies()
    })
  }

  async #replies(): Promise<void> {
    this.#looping = true
    let current: PendingRead | undefined
    try {
      while (this.#pending.size > 0) {
        const h = await this.reader.read(SIMPLE_REPLY_BYTES)
        if (h.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw new Error(`bad reply magic 0x${h.readUInt32BE(0).toString(16)}`)
        const handle = h.readBigUInt64BE(8)
        const p = this.#pending.get(handle)
        if (p === undefined) throw new Error(`reply to unknown request ${handle}`)
        this.#pending.delete(handle)
        const errno = h.readUInt32BE(4)
        if (errno !== 0) {
          p.reject(new BackupProxyError('E_NBD_READ', `NBD server ${this.where} answered error ${errno} to a read`, { fields: { errno } }))
          continue
        }
        current = p
        p.resolve(await this.reader.readInto(p.target))
        current = undefined
      }
    } catch (error) {
      this.#error = new BackupProxyError('E_NBD_READ', `NBD connection to ${this.where} failed during a read: ${(error as Error).message}`, { cause: error })
      current?.reject(this.#error)
      for (const p of this.#pending.values()) p.reject(this.#error)
      this.#pending.clear()
      this.socket.destroy()
    } finally {
      this.#looping = false
    }
  }

  /** Sends NBD_CMD_DISC and closes. */
  async close(): Promise<void> {
    if (this.#error === undefined && !this.socket.destroyed) {
      await new Promise<void>((resolve) => this.socket.end(encodeRequest(CMD_DISC, this.#nextHandle++, 0, 0), () => resolve()))
    }
    this.socket.destroy()
  }
}

/**
 * The simulator's NBD server, as XAPI exposes one on each host (xapi-nbd): fixed newstyle negotiation,
 * TLS (NBD_OPT_STARTTLS) with the host certificate `VDI.get_nbd_info` returns when the network's purpose
 * is `nbd` (none for `insecure_nbd`), export names `/<vdi uuid>?session_id=<session>` checked against
 * live sessions, NBD_OPT_EXPORT_NAME, NBD_OPT_INFO and NBD_OPT_GO, and read-only transmission
 * (NBD_CMD_READ, NBD_CMD_DISC) with simple replies. Like XAPI's server it advertises no structured
 * replies and no block status: a client learns which blocks hold data from the VHD export or from CBT.
 *
 * Faults (`setFault`): `unreachable` (get_nbd_info names a port where nothing listens), `tls-mismatch`
 * (get_nbd_info returns another certificate than the one the server presents), `reset` (the connection
 * is destroyed after `afterBytes` bytes of read data, on the next `times` connections), `stall` (the same,
 * but the connection stays open and silent).
 */
import { createServer, type Server, type Socket, type AddressInfo } from 'node:net'
import { TLSSocket } from 'node:tls'
import {
  CMD_DISC, CMD_READ, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, INFO_EXPORT, NBD_EINVAL, NBD_EPERM, NBD_MAGIC, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO,
  OPT_INFO, OPT_STARTTLS, REP_ACK, REP_ERR_INVALID, REP_ERR_POLICY, REP_ERR_TLS_REQD, REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC, TFLAG_HAS_FLAGS, TFLAG_READ_ONLY, encodeOptionReply,
} from '../nbd/protocol.js'
import { SocketReader } from '../nbd/reader.js'
import type { DiskContent, PatternPool } from './disk-content.js'
import type { SimPool } from './pool.js'
import type { SimRpc } from './rpc.js'
import { text, XapiFailure, type XapiValue } from './store.js'
import { VHD_BLOCK_BYTES } from './vhd-encoder.js'

interface SimNbdOptions {
  /** key pair of the host (PEM): TLS for networks whose purpose is `nbd` */
  tls?: { key: string | Buffer; cert: string | Buffer }
}

export type SimNbdFault =
  | { kind: 'unreachable' }
  | { kind: 'tls-mismatch'; cert: string }
  | { kind: 'reset'; afterBytes: number; times?: number }
  | { kind: 'stall'; afterBytes: number; times?: number }

const ZERO_BLOCK = Buffer.alloc(VHD_BLOCK_BYTES)

function drained(socket: Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (error?: Error): void => {
      socket.off('drain', onDrain)
      socket.off('close', onClose)
      if (error === undefined) resolve()
      else reject(error)
    }
    const onDrain = (): void => done()
    const onClose = (): void => done(new Error('closed'))
    socket.on('drain', onDrain)
    socket.on('close', onClose)
  })
}

interface Export {
  disk: DiskContent
  vdiUuid: string
}

export class SimNbdServer {
  readonly #server: Server
  readonly #sockets = new Set<Socket>()
  #port = 0
  readonly #faults: SimNbdFault[] = []
  #resetsLeft = 0
  #resetAfter = 0
  #stall = false

  constructor(
    private readonly pool: SimPool,
    private readonly rpc: SimRpc,
    private readonly patterns: PatternPool,
    private readonly options: SimNbdOptions,
  ) {
    this.#server = createServer((s) => this.#accept(s))
  }

  get port(): number {
    return this.#port
  }

  get certPem(): string {
    return this.options.tls === undefined ? '' : String(this.options.tls.cert)
  }

  async listen(host: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject)
      this.#server.listen(0, host, () => resolve())
    })
    this.#port = (this.#server.address() as AddressInfo).port
  }

  close(): Promise<void> {
    for (const s of this.#sockets) s.destroy()
    return new Promise((resolve) => this.#server.close(() => resolve()))
  }

  setFault(fault: SimNbdFault): void {
    if (fault.kind === 'reset' || fault.kind === 'stall') {
      this.#resetsLeft = fault.times ?? Number.POSITIVE_INFINITY
      this.#resetAfter = fault.afterBytes
      this.#stall = fault.kind === 'stall'
    } else this.#faults.push(fault)
  }

  clearFaults(): void {
    this.#faults.length = 0
    this.#resetsLeft = 0
  }

  /** `VDI.get_nbd_info`: one record per host with a PIF on a network whose purpose includes NBD. */
  nbdInfo(vdiRef: string, sessionId: string): XapiValue[] {
    const s = this.pool.store
    const vdi = s.get('VDI', vdiRef)
    const out: XapiValue[] = []
    for (const [, network] of s.all('network')) {
      const purpose = (network.purpose as string[] | undefined) ?? []
      const secure = purpose.includes('nbd')
      if (!secure && !purpose.includes('insecure_nbd')) continue
      for (const pifRef of network.PIFs as string[]) {
        const pif = s.get('PIF', pifRef)
        const host = s.get('host', text(pif.host))
        const mismatch = this.#faults.find((f) => f.kind === 'tls-mismatch')
        out.push({
          exportname: `/${text(vdi.uuid)}?session_id=${sessionId}`,
          address: text(pif.IP) === '' ? text(host.address) : text(pif.IP),
          port: this.#faults.some((f) => f.kind === 'unreachable') ? 1 : this.#port,
          cert: secure ? (mismatch?.kind === 'tls-mismatch' ? mismatch.cert : this.certPem) : '',
          subject: text(host.name_label),
        })
      }
    }
    return out
  }

  /** The export an export name designates, if its session is live and the VDI has data. */
  #resolve(name: string): Export | undefined {
    const m = /^\/([0-9a-f-]{36})\?session_id=(.+)$/.exec(name)
    if (m === null) return undefined
    try {
      this.rpc.checkSession(m[2])
      const ref = this.pool.store.refByUuid('VDI', m[1]!)
      const disk = this.pool.disks.get(ref)
      if (disk === undefined || this.pool.store.get('VDI', ref).type === 'cbt_metadata') return undefined
      return { disk, vdiUuid: m[1]! }
    } catch (error) {
      if (error instanceof XapiFailure) return undefined
      throw error
    }
  }

  #accept(socket: Socket): void {
    // replies are small writes in a row (INFO then ACK): without this, Nagle + delayed ACK add 40 ms
    socket.setNoDelay(true)
    this.#sockets.add(socket)
    socket.on('close', () => this.#sockets.delete(socket))
    socket.on('error', () => undefined)
    this.#serve(socket).catch(() => socket.destroy())
  }

  async #serve(plain: Socket): Promise<void> {
    let reader = new SocketReader(plain)
    let socket: Socket = plain
    const flags = Buffer.alloc(2)
    flags.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)
    plain.write(Buffer.concat([NBD_MAGIC, IHAVEOPT, flags]))
    const clientFlags = (await reader.read(4)).readUInt32BE(0)
    const noZeroes = (clientFlags & FLAG_NO_ZEROES) !== 0
    const tlsRequired = this.options.tls !== undefined
    let tls = false
    for (;;) {
      const head = await reader.read(16)
      if (!head.subarray(0, 8).equals(IHAVEOPT)) throw new Error('bad option magic')
      const option = head.readUInt32BE(8)
      const data = await reader.read(head.readUInt32BE(12))
      const reply = (type: number, body?: Buffer): boolean => socket.write(encodeOptionReply(option, type, body))
      if (tlsRequired && !tls && option !== OPT_STARTTLS && option !== OPT_ABORT) {
        if (option === OPT_EXPORT_NAME) return void socket.destroy()
        reply(REP_ERR_TLS_REQD)
        continue
      }
      if (option === OPT_ABORT) {
        reply(REP_ACK)
        return void socket.end()
      }
      if (option === OPT_STARTTLS) {
        if (!tlsRequired || tls) {
          reply(tls ? REP_ERR_INVALID : REP_ERR_POLICY)
          continue
        }
        reply(REP_ACK)
        reader.detach()
        const secure = new TLSSocket(plain, { isServer: true, key: this.options.tls!.key, cert: this.options.tls!.cert })
        secure.on('error', () => undefined)
        socket = secure
        reader = new SocketReader(secure)
        tls = true
        continue
      }
      if (option === OPT_EXPORT_NAME) {
        const exp = this.#resolve(data.toString('utf8'))
        if (exp === undefined) return void socket.destroy()
        const b = Buffer.alloc(noZeroes ? 10 : 134)
        b.writeBigUInt64BE(BigInt(exp.disk.virtualSizeBytes), 0)
        b.writeUInt16BE(TFLAG_HAS_FLAGS | TFLAG_READ_ONLY, 8)
        socket.write(b)
        return this.#transmit(socket, reader, exp, plain)
      }
      if (option === OPT_INFO || option === OPT_GO) {
        const nameLength = data.length >= 4 ? data.readUInt32BE(0) : -1
        if (nameLength < 0 || data.length < 4 + nameLength + 2) {
          reply(REP_ERR_INVALID)
          continue
        }
        const exp = this.#resolve(data.subarray(4, 4 + nameLength).toString('utf8'))
        if (exp === undefined) {
          reply(REP_ERR_UNKNOWN, Buffer.from('no such export (unknown VDI or invalid session)'))
          continue
        }
        const info = Buffer.alloc(12)
        info.writeUInt16BE(INFO_EXPORT, 0)
        info.writeBigUInt64BE(BigInt(exp.disk.virtualSizeBytes), 2)
        info.writeUInt16BE(TFLAG_HAS_FLAGS | TFLAG_READ_ONLY, 10)
        reply(REP_INFO, info)
        reply(REP_ACK)
        if (option === OPT_GO) return this.#transmit(socket, reader, exp, plain)
        continue
      }
      reply(REP_ERR_UNSUP)
    }
  }

  async #transmit(socket: Socket, reader: SocketReader, exp: Export, plain: Socket): Promise<void> {
    let resetAt = Number.POSITIVE_INFINITY
    const stall = this.#stall
    if (this.#resetsLeft > 0) {
      this.#resetsLeft--
      resetAt = this.#resetAfter
    }
    let sent = 0
    const size = exp.disk.virtualSizeBytes
    for (;;) {
      const req = await reader.read(28)
      if (req.readUInt32BE(0) !== REQUEST_MAGIC) throw new Error('bad request magic')
      const type = req.readUInt16BE(6)
      const handle = req.subarray(8, 16)
      const offset = Number(req.readBigUInt64BE(16))
      const length = req.readUInt32BE(24)
      const replyHead = (error: number): Buffer => {
        const b = Buffer.alloc(16)
        b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0)
        b.writeUInt32BE(error, 4)
        handle.copy(b, 8)
        return b
      }
      if (type === CMD_DISC) return void socket.end()
      if (type !== CMD_READ) {
        socket.write(replyHead(NBD_EPERM))
        continue
      }
      if (offset + length > size || length === 0) {
        socket.write(replyHead(NBD_EINVAL))
        continue
      }
      socket.write(replyHead(0))
      for (const part of this.#range(exp.disk, offset, length)) {
        if (sent + part.length > resetAt) {
          socket.write(part.subarray(0, Math.max(0, resetAt - sent)))
          if (stall) return // silent until the client gives up
          // a TCP reset, as a host that goes away mid-read (the TLS layer goes with it)
          plain.resetAndDestroy()
          return
        }
        sent += part.length
        if (!socket.write(part)) await drained(socket)
      }
    }
  }

  /** The bytes of [offset, offset+length) of a disk, as views of the pattern pool (no copy). */
  *#range(disk: DiskContent, offset: number, length: number): Generator<Buffer> {
    let pos = offset
    const end = offset + length
    while (pos < end) {
      const b = Math.floor(pos / VHD_BLOCK_BYTES)
      const g = disk.generations.get(b)
      const parts = g === undefined ? [ZERO_BLOCK] : disk.blockParts(this.patterns, b, g)
      let partStart = b * VHD_BLOCK_BYTES
      for (const p of parts) {
        const partEnd = partStart + p.length
        if (partEnd > pos && partStart < end) yield p.subarray(pos - partStart, Math.min(partEnd, end) - partStart)
        if (partEnd > pos) pos = Math.min(partEnd, end)
        partStart = partEnd
      }
    }
  }
}

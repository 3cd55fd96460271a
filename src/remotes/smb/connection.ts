/**
 * One SMB2 transport connection: direct TCP (4-byte length framing, port 445), message ids and credits,
 * request/response matching, interim STATUS_PENDING responses, and signing.
 *
 * - Credits ([MS-SMB2] 3.2.4.1.5): each request consumes `creditCharge` credits and as many message
 *   ids; a request waits (FIFO) until enough credits are granted. Every request asks for more until
 *   `targetCredits` are available, so several large READ/WRITEs can be in flight.
 * - Async: a response with STATUS_PENDING and the ASYNC flag is interim (Samba sends one for writes it
 *   runs through AIO): its credits are counted and the request keeps waiting for the final response
 *   with the same MessageId.
 * - Signing: once the session has a Signer, requests are signed when `signRequests` is set (server or
 *   client requires it) and every signed response is verified; an unsigned final response while
 *   signing is required, or a bad signature, kills the connection (it may be tampered with).
 * - Large payloads (WRITE data) are written after the header with cork/uncork (one writev, no copy;
 *   `onFlushed` tells when the kernel has them, so the caller may reuse the memory). The socket and its
 *   framing are frame-reader.ts: a large frame's data is read by the kernel straight into that frame
 *   (no copy in JS), and READ payloads are returned as views of it.
 * - Backpressure: once socket.write() has reported a full buffer, new requests wait for 'drain'.
 * - When the socket dies every pending request fails with ECONNRESET; the owner (client.ts) drops
 *   this connection and makes a new one for later operations.
 */
import type { Socket } from 'node:net'
import { RemoteError } from '../../common/errors.js'
import type { Signer } from './crypto.js'
import { connectionError, statusError } from './errors.js'
import { connectSocket, FrameReader, type FrameSink } from './frame-reader.js'
import { NtStatus } from './status.js'
import { Command, COMMAND_NAMES, decodeHeader, encodeHeader, Flags, HEADER_SIZE, type Header } from './wire.js'

/** statuses after which the session (or tree) is gone: the connection is dropped and remade */
const SESSION_GONE = new Set<number>([NtStatus.USER_SESSION_DELETED, NtStatus.NETWORK_SESSION_EXPIRED, NtStatus.NETWORK_NAME_DELETED])

export interface Response {
  header: Header
  /** the message after the 64-byte header */
  body: Buffer
  /** the whole message (header + body), for the 3.1.1 preauth hash and signature checks */
  raw: Buffer
}

interface RequestOptions {
  command: number
  /** fixed part of the body (and any small variable part) */
  body: Buffer
  /** large trailing data (WRITE), sent without copying */
  payload?: Uint8Array
  /** credits this request costs (1 per 64 KiB of READ/WRITE); default 1 */
  creditCharge?: number
  treeId?: number
  /** statuses that resolve instead of rejecting; SUCCESS always does */
  accept?: readonly number[]
  /** what the request is about, for error messages (a path, never a secret) */
  what?: string
  signal?: AbortSignal
  /** sign even when signing is not required (3.1.1 TREE_CONNECT) */
  forceSign?: boolean
  /** receives the message as sent (header + body, no transport header), for the preauth hash */
  onSent?: (message: Buffer) => void
  /** called once the whole request is in the kernel's socket buffer, or the socket failed (payload reusable) */
  onFlushed?: () => void
}

interface Pending {
  command: number
  what: string
  accept: readonly number[]
  resolve: (r: Response) => void
  reject: (e: Error) => void
  /** the caller stopped waiting (abort); the response is still consumed for its credits */
  abandoned: boolean
  timer: NodeJS.Timeout | undefined
  /** detaches the abort listener */
  cleanup: () => void
}

interface ConnectionOptions {
  host: string
  port: number
  connectTimeoutMs: number
  requestTimeoutMs: number
  targetCredits: number
  signal?: AbortSignal
}

/** Counters for tests and diagnostics. */
interface ConnectionStats {
  requests: number
  /** interim STATUS_PENDING responses received (each later followed by its final response) */
  interimResponses: number
  /** most requests that were outstanding at once */
  maxInFlight: number
  /** credits currently available */
  credits: number
  /** received bytes copied in JS from the shared read buffer into their frames (the rest the kernel wrote in place) */
  copiedBytes: number
}

export class SmbConnection implements FrameSink {
  readonly stats: ConnectionStats = { requests: 0, interimResponses: 0, maxInFlight: 0, credits: 1, copiedBytes: 0 }
  sessionId = 0n
  signer: Signer | undefined
  signRequests = false
  /** whether the server lets one request cost more than one credit (SMB2_GLOBAL_CAP_LARGE_MTU) */
  multiCredit = false
  private credits = 1
  private nextMessageId = 0n
  private readonly pending = new Map<bigint, Pending>()
  private readonly creditWaiters: { charge: number; resolve: () => void; reject: (e: Error) => void }[] = []
  private closedError: Error | undefined
  private readonly closeListeners: ((error: Error) => void)[] = []
  /** resolves on the socket's next 'drain' (or close), while requests wait for it */
  private drained: Promise<void> | undefined

  private constructor(
    private readonly socket: Socket,
    private readonly options: ConnectionOptions,
  ) {
    socket.setNoDelay(true)
    // a server that vanished without a FIN/RST (power loss, partition) is noticed in about a minute
    socket.setKeepAlive(true, 30_000)
    socket.on('error', (e) => this.fail(connectionError('ECONNRESET', `SMB connection to ${this.server} failed: ${e.message}`, this.server, e)))
    socket.on('close', () => this.fail(connectionError('ECONNRESET', `SMB connection to ${this.server} was closed`, this.server)))
  }

  get server(): string {
    return `${this.options.host}:${this.options.port}`
  }

  get closed(): boolean {
    return this.closedError !== undefined
  }

  static async open(options: ConnectionOptions): Promise<SmbConnection> {
    const reader = new FrameReader()
    const socket = await connectSocket(options, reader)
    const conn = new SmbConnection(socket, options)
    reader.sink = conn
    return conn
  }

  onClose(listener: (error: Error) => void): void {
    this.closeListeners.push(listener)
  }

  /** Sends a request and waits for its final response. */
  async request(req: RequestOptions): Promise<Response> {
    if (this.closedError !== undefined) throw this.closedError
    const charge = Math.max(1, req.creditCharge ?? 1)
    if (charge > 1 && !this.multiCredit) throw new Error(`internal: request charging ${charge} credits on a connection without LARGE_MTU`)
    await this.takeCredits(charge)
    await this.writable()
    const closedWhileWaiting = this.closedError as Error | undefined
    if (closedWhileWaiting !== undefined) throw closedWhileWaiting
    const messageId = this.nextMessageId
    this.nextMessageId += BigInt(charge)
    const outstanding = this.credits + this.pending.size
    const creditRequest = outstanding < this.options.targetCredits ? charge + Math.min(256, this.options.targetCredits - outstanding) : charge
    const payloadLength = req.payload?.length ?? 0
    const head = Buffer.allocUnsafe(4 + HEADER_SIZE + req.body.length)
    const total = HEADER_SIZE + req.body.length + payloadLength
    head.writeUInt32BE(total & 0xffffff, 0)
    const sign = (this.signRequests || req.forceSign === true) && this.signer !== undefined && req.command !== Command.NEGOTIATE && req.command !== Command.SESSION_SETUP
    encodeHeader(
      {
        creditCharge: req.command === Command.NEGOTIATE ? 0 : charge,
        command: req.command,
        creditRequest,
        flags: sign ? Flags.SIGNED : 0,
        messageId,
        treeId: req.treeId ?? 0,
        sessionId: this.sessionId,
      },
      head,
      4,
    )
    req.body.copy(head, 4 + HEADER_SIZE)
    if (sign && this.signer !== undefined) {
      const parts: Uint8Array[] = [head.subarray(4)]
      if (req.payload !== undefined) parts.push(req.payload)
      this.signer.sign(parts).copy(head, 4 + 48)
    }
    const response = this.register(messageId, req)
    req.onSent?.(head.subarray(4))
    const flushed = req.onFlushed
    this.socket.cork()
    if (req.payload !== undefined && req.payload.length > 0) {
      this.socket.write(head)
      this.socket.write(req.payload, flushed === undefined ? undefined : () => flushed())
    } else {
      this.socket.write(head, flushed === undefined ? undefined : () => flushed())
    }
    this.socket.uncork()
    return response
  }

  /** Registers the pending response of a request about to be sent. */
  private register(messageId: bigint, req: RequestOptions): Promise<Response> {
    return new Promise<Response>((resolve, reject) => {
      const p: Pending = { command: req.command, what: req.what ?? '', accept: req.accept ?? [], resolve, reject, abandoned: false, timer: undefined, cleanup: () => undefined }
      p.timer = setTimeout(() => {
        this.fail(connectionError('ETIMEDOUT', `SMB ${COMMAND_NAMES[req.command] ?? req.command} request to ${this.server} got no answer in ${this.options.requestTimeoutMs} ms; the connection was dropped`, this.server))
      }, this.options.requestTimeoutMs)
      this.pending.set(messageId, p)
      this.stats.requests++
      this.stats.maxInFlight = Math.max(this.stats.maxInFlight, this.pending.size)
      if (req.signal !== undefined) {
        const signal = req.signal
        const onAbort = () => {
          p.abandoned = true
          reject(new RemoteError('E_REMOTE', `SMB request aborted${p.what === '' ? '' : ` (${p.what})`}`, { cause: signal.reason }))
        }
        if (signal.aborted) onAbort()
        else {
          signal.addEventListener('abort', onAbort, { once: true })
          p.cleanup = () => signal.removeEventListener('abort', onAbort)
        }
      }
    })
  }

  /**
   * Sends related requests as one compound ([MS-SMB2] 3.2.4.1.4): one frame, each message 8-aligned and
   * chained by NextCommand, the 2nd and later flagged RELATED (they use the FileId the first CREATE
   * opens: pass RELATED_FILE_ID). One round trip instead of one per request. Resolves with the outcome
   * of every request, in order. Servers fail the rest of a chain only after a failed CREATE (Samba), so
   * never chain a request that must not run when the previous one failed.
   */
  async compoundSettled(reqs: readonly RequestOptions[]): Promise<PromiseSettledResult<Response>[]> {
    if (this.closedError !== undefined) throw this.closedError
    await this.takeCredits(reqs.length)
    await this.writable()
    const closedWhileWaiting = this.closedError as Error | undefined
    if (closedWhileWaiting !== undefined) throw closedWhileWaiting
    const outstanding = this.credits + this.pending.size
    const extra = outstanding < this.options.targetCredits ? Math.min(256, this.options.targetCredits - outstanding) : 0
    const messages: Buffer[] = []
    const responses: Promise<Response>[] = []
    let total = 0
    reqs.forEach((req, i) => {
      const last = i === reqs.length - 1
      const length = HEADER_SIZE + req.body.length
      const msg = Buffer.alloc(last ? length : Math.ceil(length / 8) * 8)
      const sign = (this.signRequests || req.forceSign === true) && this.signer !== undefined
      const messageId = this.nextMessageId++
      encodeHeader(
        {
          creditCharge: 1,
          command: req.command,
          creditRequest: i === 0 ? 1 + extra : 1,
          flags: (sign ? Flags.SIGNED : 0) | (i > 0 ? Flags.RELATED_OPERATIONS : 0),
          messageId,
          treeId: req.treeId ?? 0,
          sessionId: this.sessionId,
        },
        msg,
      )
      msg.writeUInt32LE(last ? 0 : msg.length, 20)
      req.body.copy(msg, HEADER_SIZE)
      if (sign && this.signer !== undefined) this.signer.sign([msg]).copy(msg, 48)
      messages.push(msg)
      total += msg.length
      responses.push(this.register(messageId, req))
    })
    const transport = Buffer.alloc(4)
    transport.writeUInt32BE(total & 0xffffff, 0)
    this.socket.cork()
    this.socket.write(transport)
    for (const m of messages) this.socket.write(m)
    this.socket.uncork()
    return Promise.allSettled(responses)
  }

  /** compoundSettled, rejecting with the first failure (later ones are usually its consequences). */
  async compound(reqs: readonly RequestOptions[]): Promise<Response[]> {
    const settled = await this.compoundSettled(reqs)
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed !== undefined) throw failed.reason
    return settled.map((r) => (r as PromiseFulfilledResult<Response>).value)
  }

  /** Verifies a signed message with the session's signer (throws on mismatch). */
  verify(raw: Buffer): void {
    if (this.signer === undefined) return
    const copy = Buffer.from(raw.subarray(0, HEADER_SIZE))
    const expected = Buffer.from(copy.subarray(48, 64))
    copy.fill(0, 48, 64)
    const actual = this.signer.sign([copy, raw.subarray(HEADER_SIZE)])
    if (!actual.equals(expected)) {
      throw connectionError('EACCES', `SMB response from ${this.server} has a bad signature: the connection may be tampered with (or the session key is wrong)`, this.server)
    }
  }

  /** Closes the socket gracefully; pending requests fail. */
  close(): void {
    this.fail(connectionError('ECONNRESET', `SMB connection to ${this.server} was closed by the client`, this.server))
  }

  /**
   * Backpressure: while the socket holds more than its high-water mark in user space (write() returned
   * false), new requests wait for 'drain', in arrival order (message ids are taken after this wait).
   */
  private async writable(): Promise<void> {
    while (this.socket.writableNeedDrain && this.closedError === undefined) {
      this.drained ??= new Promise<void>((resolve) => {
        const done = () => {
          this.socket.off('drain', done)
          this.socket.off('close', done)
          this.drained = undefined
          resolve()
        }
        this.socket.on('drain', done)
        this.socket.on('close', done)
      })
      await this.drained
    }
  }

  private async takeCredits(charge: number): Promise<void> {
    if (this.creditWaiters.length === 0 && this.credits >= charge) {
      this.credits -= charge
      this.stats.credits = this.credits
      return
    }
    await new Promise<void>((resolve, reject) => this.creditWaiters.push({ charge, resolve, reject }))
  }

  private grant(n: number): void {
    this.credits += n
    this.stats.credits = this.credits
    while (this.creditWaiters.length > 0) {
      const w = this.creditWaiters[0]
      if (w === undefined || this.credits < w.charge) break
      this.credits -= w.charge
      this.creditWaiters.shift()
      w.resolve()
    }
  }

  /** One frame: a message, or a compound response (messages chained by NextCommand, each signed alone). */
  onFrame(frame: Buffer): void {
    if (frame.length === 0) return // keep-alive
    let offset = 0
    for (;;) {
      if (frame.length - offset < HEADER_SIZE) throw connectionError('EIO', `SMB server ${this.server} sent a truncated message`, this.server)
      const next = frame.readUInt32LE(offset + 20)
      if (next !== 0 && (next < HEADER_SIZE || offset + next > frame.length)) throw connectionError('EIO', `SMB server ${this.server} sent a bad compound chain`, this.server)
      const end = next === 0 ? frame.length : offset + next
      this.onPart(frame.subarray(offset, end))
      if (next === 0 || this.closed) return
      offset = end
    }
  }

  private onPart(raw: Buffer): void {
    const header = decodeHeader(raw)
    const p = this.pending.get(header.messageId)
    this.grant(header.credits)
    if (p === undefined) return // oplock break or a response nobody waits for
    if (header.status === NtStatus.PENDING && (header.flags & Flags.ASYNC_COMMAND) !== 0) {
      this.stats.interimResponses++
      return // interim: wait for the final one with the same MessageId
    }
    this.pending.delete(header.messageId)
    clearTimeout(p.timer)
    p.cleanup()
    if ((header.flags & Flags.SIGNED) !== 0 && this.signer !== undefined && header.command !== Command.SESSION_SETUP && header.status !== NtStatus.PENDING) {
      this.verify(raw)
    } else if (this.signRequests && this.signer !== undefined && header.command !== Command.SESSION_SETUP && header.status !== NtStatus.PENDING) {
      throw connectionError('EACCES', `SMB server ${this.server} sent an unsigned response while signing is required`, this.server)
    }
    if (SESSION_GONE.has(header.status)) {
      // the session or tree is gone server-side: this connection is useless, let the owner make a new one
      const error = statusError(header.status, header.command, p.what, this.server)
      if (!p.abandoned) p.reject(error)
      this.fail(error)
      return
    }
    if (p.abandoned) return
    const response = { header, body: raw.subarray(HEADER_SIZE), raw }
    if (header.status === NtStatus.SUCCESS || p.accept.includes(header.status)) p.resolve(response)
    else p.reject(statusError(header.status, header.command, p.what, this.server))
  }

  onError(error: Error): void {
    this.fail(error)
  }

  private fail(error: Error): void {
    if (this.closedError !== undefined) return
    this.closedError = error
    this.socket.destroy()
    for (const p of this.pending.values()) {
      clearTimeout(p.timer)
      p.cleanup()
      if (!p.abandoned) p.reject(error)
    }
    this.pending.clear()
    for (const w of this.creditWaiters.splice(0)) w.reject(error)
    for (const l of this.closeListeners) l(error)
  }
}

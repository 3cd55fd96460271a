/**
 * Several NBD connections to one disk (XO's `nbdConcurrency`), with XO's policy: connections are opened
 * one after the other (opening them at once races in XAPI's NBD server), spread over the servers
 * `VDI.get_nbd_info` listed, and a server that cannot be reached is dropped from the candidates; at
 * least one connection must open, else the first server's coded error is thrown (E_NBD_UNREACHABLE,
 * E_NBD_TLS, E_NBD_NEGOTIATION: the caller falls back to the HTTP export). Fewer connections than asked
 * is a warning, not a failure.
 *
 * Reads go to connection `(offset / 2 MiB) mod n`. A read that fails on a connection error (a reset
 * mid-read) reconnects that connection and is retried, up to `readRetries` times per read; then it
 * fails with E_NBD_READ. A read never resolves with fewer bytes than asked.
 */
import { BackupProxyError, CancelledError } from '../../common/errors.js'
import { NbdConnection, type NbdConnectOptions, type NbdServerInfo } from './client.js'

interface NbdDiskOptions {
  concurrency: number
  signal?: AbortSignal
  timeoutMs?: number
  /** a read with no data for this long fails (and is retried); default 5 minutes */
  inactivityTimeoutMs?: number
  /** retries of one read after a connection error (each on a fresh connection); default 3 */
  readRetries?: number
}

interface Slot {
  conn: NbdConnection
  info: NbdServerInfo
  reconnecting: Promise<NbdConnection> | undefined
}

const STRIPE_BYTES = 2 * 1024 * 1024

function connectOptionsOf(o: NbdDiskOptions): NbdConnectOptions {
  return {
    ...(o.signal === undefined ? {} : { signal: o.signal }),
    ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs }),
    ...(o.inactivityTimeoutMs === undefined ? {} : { inactivityTimeoutMs: o.inactivityTimeoutMs }),
  }
}

export class NbdDisk {
  readonly warnings: string[] = []
  private constructor(
    private readonly slots: Slot[],
    readonly sizeBytes: number,
    private readonly options: NbdDiskOptions,
  ) {}

  get connections(): number {
    return this.slots.length
  }

  static async open(servers: readonly NbdServerInfo[], options: NbdDiskOptions): Promise<NbdDisk> {
    if (servers.length === 0) throw new BackupProxyError('E_NBD_UNREACHABLE', 'VDI.get_nbd_info listed no NBD server: no network of the pool has the nbd or insecure_nbd purpose')
    const candidates = [...servers]
    const slots: Slot[] = []
    let firstError: unknown
    const connectOptions = connectOptionsOf(options)
    for (let i = 0; i < options.concurrency && candidates.length > 0; ) {
      const info = candidates[i % candidates.length]!
      try {
        slots.push({ conn: await NbdConnection.open(info, connectOptions), info, reconnecting: undefined })
        i++
      } catch (error) {
        if (error instanceof CancelledError) {
          await Promise.all(slots.map((s) => s.conn.close().catch(() => undefined)))
          throw error
        }
        firstError ??= error
        candidates.splice(candidates.indexOf(info), 1)
      }
    }
    if (slots.length === 0) throw firstError
    const disk = new NbdDisk(slots, slots[0]!.conn.sizeBytes, options)
    if (slots.length < options.concurrency) disk.warnings.push(`only ${slots.length} of ${options.concurrency} NBD connections could be opened`)
    return disk
  }

  async read(offset: number, target: Buffer): Promise<Buffer> {
    const slot = this.slots[Math.floor(offset / STRIPE_BYTES) % this.slots.length]!
    const retries = this.options.readRetries ?? 3
    for (let attempt = 0; ; attempt++) {
      const conn = slot.reconnecting === undefined ? slot.conn : await slot.reconnecting
      try {
        return await conn.read(offset, target)
      } catch (error) {
        if (this.options.signal?.aborted === true) throw new CancelledError('the NBD read was cancelled', { cause: this.options.signal.reason })
        if (!(error instanceof BackupProxyError) || error.code !== 'E_NBD_READ' || attempt >= retries) {
          throw error instanceof BackupProxyError
            ? error
            : new BackupProxyError('E_NBD_READ', `NBD read at ${offset} failed: ${(error as Error).message}`, { cause: error })
        }
        await this.#reconnect(slot, conn).catch((e: unknown) => {
          throw new BackupProxyError('E_NBD_READ', `NBD read at ${offset} failed and the connection could not be reopened: ${(e as Error).message}`, { cause: e })
        })
      }
    }
  }

  /** Replaces a failed connection once, however many reads saw it fail. */
  #reconnect(slot: Slot, failed: NbdConnection): Promise<NbdConnection> {
    if (slot.conn !== failed) return Promise.resolve(slot.conn)
    slot.reconnecting ??= (async () => {
      try {
        await failed.close().catch(() => undefined)
        const conn = await NbdConnection.open(slot.info, connectOptionsOf(this.options))
        slot.conn = conn
        return conn
      } finally {
        slot.reconnecting = undefined
      }
    })()
    return slot.reconnecting
  }

  async close(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.conn.close().catch(() => undefined)))
  }
}

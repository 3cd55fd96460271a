/**
 * One full backup's transfer, in the thread that runs it (`backup.xva`, xva.thread.ts): XAPI's VM export
 * as XVA (`GET /export/`, compressed as the job asks) read once and written to every target remote at
 * once through the fan-out (fan-out.ts: the slowest target paces the stream, a target that fails is
 * dropped and its temporary removed, the others go on). Each target writes `<ts>.xva` under a temporary
 * name; once the whole export arrived the XVA is validated as XO's isValidXva does — a compressed one
 * starts with the gzip/zstd magic, a plain one is a whole number of 512-byte blocks ending with the two
 * zero blocks of a tar — and the HTTP answer must be complete; only then is it published, followed by
 * XO's `<ts>.xva.checksum` (`$<id>$$<hex digest>` of the file in XO's format, SHA-256 or MD5 as the input
 * says: src/xva/checksum.ts; none on an encrypted remote, as XO). Progress (bytes read) at most every 250 ms.
 */
import { createHash, type Hash } from 'node:crypto'
import type { Writable } from 'node:stream'
import { BackupProxyError, serializeError, toError, type SerializedError } from '../common/errors.js'
import { createRemote } from '../remotes/index.js'
import { EncryptedRemote } from '../remotes/encryption.js'
import { LocalWriteStream } from '../remotes/local-writer.js'
import type { Remote } from '../remotes/remote.js'
import type { RemoteOptions } from '../remotes/url-types.js'
import type { XvaExportDescriptor } from '../xapi/descriptors.js'
import { formatChecksum } from '../xva/checksum.js'
import { detectCompression, type XvaCompression } from '../xva/compression.js'
import { openXvaExport } from '../xva/http.js'
import { TAR_BLOCK } from '../xva/tar.js'
import { batchesOf } from './chunks.js'
import { fanOut, type FanOutTarget } from '../common/fan-out.js'
import type { DiskMetrics } from './ports.js'

const PROGRESS_INTERVAL_MS = 250
/** the export's socket chunks are gathered into batches of about this size, written at once */
const WRITE_BYTES = 1024 * 1024

interface XvaTarget {
  id: string
  url: string
  options: RemoteOptions
  /** remote-root path of the XVA (`xo-vm-backups/<vm>/<ts>.xva`) */
  path: string
}

export interface XvaExportInput {
  descriptor: XvaExportDescriptor
  compression: XvaCompression
  /** the digest of the checksum file (resolveChecksumAlgorithm of backup.xvaChecksum); absent: MD5, as XO */
  checksumAlgorithm?: 'md5' | 'sha256'
  targets: XvaTarget[]
}

export interface XvaExportResult {
  /** bytes of XVA read from XAPI (= written to each target) */
  sizeBytes: number
  succeeded: string[]
  failed: { id: string; error: SerializedError }[]
  durationMs: number
}

export type XvaExporter = (input: XvaExportInput, options: { signal: AbortSignal; onProgress?: (p: { readBytes: number }) => void }) => Promise<XvaExportResult>

/** Size, first bytes, last 1 KiB and digest of the XVA as it streams. */
class XvaWatch {
  size = 0
  head = Buffer.alloc(0)
  /** a copy of the last bytes (the batches' memory is reused once written) */
  tail: Buffer = Buffer.alloc(0)
  readonly #hash: Hash

  constructor(readonly algorithm: 'md5' | 'sha256') {
    this.#hash = createHash(algorithm)
  }

  add(batch: Batch): void {
    for (const chunk of batch.parts) {
      if (this.head.length < 4) this.head = Buffer.concat([this.head, chunk.subarray(0, 4 - this.head.length)])
      this.#hash.update(chunk)
    }
    this.size += batch.size
    this.tail = lastBytes([this.tail, ...batch.parts], 2 * TAR_BLOCK)
  }

  /** XO's checksum string of what streamed so far */
  get checksum(): string {
    return formatChecksum(this.algorithm, this.#hash.copy().digest('hex'))
  }

  /** Why this is not a valid XVA of `expected` compression, or undefined. */
  problem(expected: XvaCompression): string | undefined {
    if (this.size < 20) return `the export is ${this.size} bytes long`
    const found = detectCompression(this.head)
    if (found !== expected) return `the export is ${found === 'none' ? 'not compressed' : found}, ${expected === 'none' ? 'no compression' : expected} was asked`
    if (expected !== 'none') return undefined
    if (this.size % TAR_BLOCK !== 0 || !this.tail.every((b) => b === 0)) return 'the tar does not end with its two zero blocks (truncated export)'
    return undefined
  }
}

/** A copy of the last `n` bytes of `parts` (all of them when shorter). */
function lastBytes(parts: Buffer[], n: number): Buffer {
  const picked: Buffer[] = []
  let size = 0
  for (let i = parts.length - 1; i >= 0 && size < n; i--) {
    const p = parts[i]!
    const b = p.length > n - size ? p.subarray(p.length - (n - size)) : p
    picked.unshift(b)
    size += b.length
  }
  return Buffer.concat(picked, size)
}

/** The export's socket chunks of about WRITE_BYTES, as received (batchesOf), and their size. */
interface Batch {
  parts: Buffer[]
  size: number
  /** a copy of the parts in one buffer, made once for the writers that may not take the parts themselves */
  joined?: Buffer
}

/**
 * Writes a batch. The parts are views of the export's read buffers, reused once every target wrote them
 * (raw-get.ts, slab-pool.ts), so only a writer that is done with a buffer when its write calls back may
 * take them as they are: the local remote's (LocalWriteStream: the kernel copied them when its vectored
 * write returns), which gets them corked, in one vectored write. Every other writer (SMB, NFS, S3,
 * encryption) gets one copy of the batch, shared by all of them — also one large write rather than one
 * per socket read, as those writers send each write on its own.
 */
function write(out: Writable, batch: Batch): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (error?: Error | null): void => (error == null ? resolve() : reject(error))
    if (!(out instanceof LocalWriteStream)) {
      batch.joined ??= Buffer.concat(batch.parts, batch.size)
      out.write(batch.joined, done)
      return
    }
    out.cork()
    const last = batch.parts.length - 1
    for (let i = 0; i < last; i++) out.write(batch.parts[i]!)
    out.write(batch.parts[last]!, done)
    out.uncork()
  })
}

function ended(out: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    out.once('error', reject)
    // end's callback gets the error of a failed publish (the 'error' event may come after it)
    out.end((error?: Error | null) => {
      out.off('error', reject)
      if (error == null) resolve()
      else reject(error)
    })
  })
}

interface Opened {
  remote: Remote
  out?: Writable
}

export async function runXvaExport(
  input: XvaExportInput,
  { signal, onProgress, metrics }: { signal: AbortSignal; onProgress?: (p: { readBytes: number }) => void; metrics?: DiskMetrics },
): Promise<XvaExportResult> {
  const t0 = performance.now()
  const opened = new Map<string, Opened>()
  const openFailures: { id: string; error: Error }[] = []
  await Promise.all(input.targets.map(async (t) => {
    const remote = createRemote(t.url, t.options)
    metrics?.attachRemote(remote, t.id)
    try {
      await remote.open()
      opened.set(t.id, { remote })
    } catch (error) {
      openFailures.push({ id: t.id, error: toError(error) })
      await remote.close().catch(() => undefined)
    }
  }))
  try {
    if (opened.size === 0) throw new BackupProxyError('E_BACKUP', `no target could be opened: ${openFailures.map((f) => `${f.id}: ${f.error.message}`).join('; ')}`)
    const res = await openXvaExport(input.descriptor, signal)
    const watch = new XvaWatch(input.checksumAlgorithm ?? 'md5')
    let last = 0
    let counted = 0
    const report = (force: boolean): void => {
      const now = performance.now()
      if (!force && now - last < PROGRESS_INTERVAL_MS) return
      last = now
      metrics?.bytesRead(watch.size - counted)
      counted = watch.size
      onProgress?.({ readBytes: watch.size })
    }
    async function* source(): AsyncGenerator<Batch> {
      for await (const parts of batchesOf(res, WRITE_BYTES)) {
        const batch: Batch = { parts, size: parts.reduce((n, p) => n + p.length, 0) }
        watch.add(batch)
        report(false)
        yield batch
      }
      if (!res.complete) throw new BackupProxyError('E_XVA_CORRUPT', `the XVA export of VM ${input.descriptor.vmRef} ended early after ${watch.size} bytes`)
    }
    const targets: FanOutTarget<Batch>[] = input.targets.filter((t) => opened.has(t.id)).map((t) => {
      const o = opened.get(t.id)!
      return {
        id: t.id,
        begin: async () => {
          o.out = await o.remote.createWriteStream(t.path, { exclusive: true, signal })
        },
        write: (chunk) => write(o.out!, chunk),
        end: async () => {
          // validate, then publish: nothing but a whole XVA ever appears under its name
          const problem = watch.problem(input.compression)
          if (problem !== undefined) throw new BackupProxyError('E_XVA_CORRUPT', `XVA of VM ${input.descriptor.vmRef} refused: ${problem}`)
          await ended(o.out!)
          if (!(o.remote instanceof EncryptedRemote)) await o.remote.writeFile(`${t.path}.checksum`, watch.checksum, { exclusive: true })
        },
        abort: async (reason) => {
          o.out?.destroy(reason)
          await o.remote.unlink(`${t.path}.checksum`).catch(() => undefined)
        },
      }
    })
    // once every target wrote a batch, its read buffers take the next reads
    const result = await fanOut(source(), targets, { signal, maxPendingPerTarget: 4, onBlockSettled: (batch) => batch.parts.forEach((p) => res.release(p)) })
    report(true)
    metrics?.exportDuration((performance.now() - t0) / 1000)
    return {
      sizeBytes: watch.size,
      succeeded: result.succeeded.sort(),
      failed: [...openFailures, ...result.failed].map((f) => ({ id: f.id, error: serializeError(f.error) })),
      durationMs: performance.now() - t0,
    }
  } finally {
    await Promise.all([...opened.values()].map((o) => o.remote.close().catch(() => undefined)))
  }
}

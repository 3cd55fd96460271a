/**
 * The byte work of a mirror backup, run inside a stream-pool thread (mirror.thread.ts): nothing but plain
 * data crosses threads, so each call opens the source and target remotes from their URLs.
 *
 * - `copyVhd`: one VHD of the source (VhdFile or VhdDirectory) re-written to every target in the target's
 *   own format (useVhdDirectory), block by block through the VHD engine's sinks: the footer keeps the
 *   source's uuid (Xen Orchestra chains deltas by it), a delta's header names its parent ON THAT TARGET
 *   (uuid checked, relative path), and each sink validates before it publishes under the final name.
 *   Blocks are read a few ahead of the writers so the source and targets work at the same time.
 *   Fast path: a VhdFile whose every target is a VhdFile naming the same parent (same relative path, as
 *   a mirrored chain does) is copied byte for byte (`copyFile`: one sequential read, size checked), the
 *   source having been opened and checked (footer, header, BAT against its size) first.
 * - `copyFile`: any other file of a backup (an XVA, its checksum), streamed to a temporary name on every
 *   target, its size (and, given one, XO's `$<id>$$<digest>` checksum) checked, then published. A target that
 *   can copy from the source itself (Remote.copyFrom: both remotes local, the kernel copies with
 *   copy_file_range, nothing through this process) does so instead, to a temporary name, size checked,
 *   then published; a file with a checksum to verify is always streamed.
 */
import { posix } from 'node:path'
import { once, setMaxListeners } from 'node:events'
import type { Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { BackupProxyError, serializeError, toError, type SerializedError } from '../common/errors.js'
import { createRemote } from '../remotes/index.js'
import type { Remote } from '../remotes/remote.js'
import type { RemoteOptions } from '../remotes/url-types.js'
import { ChecksumCheck } from '../xva/checksum.js'
import { VhdBlockPool } from '../vhd/block-pool.js'
import { DISK_TYPES } from '../vhd/constants.js'
import { openVhd } from '../vhd/open.js'
import type { VhdBlock } from '../vhd/stream-parser.js'
import { openTarget } from './disk-export.js'
import { fanOut, type FanOutTarget } from '../common/fan-out.js'
import type { DiskMetrics, DiskTarget } from './ports.js'

interface MirrorSource {
  url: string
  options: RemoteOptions
}

export interface CopyVhdInput {
  source: MirrorSource
  /** remote-root path of the source VHD (`.vhd` or `.alias.vhd`) */
  sourcePath: string
  /** each target's path, format and (for a delta) parent */
  targets: DiskTarget[]
}

export interface CopyResult {
  /** bytes read from the source */
  readBytes: number
  /** bytes written to each target (the largest) */
  sizeBytes: number
  differencing: boolean
  succeeded: string[]
  failed: { id: string; error: SerializedError }[]
}

export interface CopyFileInput {
  source: MirrorSource
  sourcePath: string
  /** XO's checksum of the file (`$1$$<md5 hex>` or `$5$$<sha256 hex>`…, from `<file>.checksum`), verified when given */
  checksum?: string
  targets: { id: string; url: string; options: RemoteOptions; path: string }[]
}

export interface CopyOptions {
  signal: AbortSignal
  onProgress?: (p: { readBytes: number }) => void
  metrics?: DiskMetrics
}

const READ_AHEAD_BLOCKS = 4
const blockPool = new VhdBlockPool({ maxFree: 0 })

async function openSource(source: MirrorSource, metrics: DiskMetrics | undefined): Promise<Remote> {
  const remote = createRemote(source.url, source.options)
  metrics?.attachRemote(remote, 'source')
  await remote.open()
  return remote
}

/** Reads `indexes` in order, up to READ_AHEAD_BLOCKS at once. */
async function* readAhead(read: (index: number) => Promise<VhdBlock>, indexes: readonly number[]): AsyncGenerator<VhdBlock> {
  const pending: Promise<VhdBlock>[] = []
  let next = 0
  const fill = () => {
    while (pending.length < READ_AHEAD_BLOCKS && next < indexes.length) {
      const p = read(indexes[next++]!)
      p.catch(() => undefined) // awaited in order below; a later failure must not be unhandled meanwhile
      pending.push(p)
    }
  }
  fill()
  while (pending.length > 0) {
    const block = await pending.shift()!
    fill()
    yield block
  }
}

export async function copyVhd(input: CopyVhdInput, { signal, onProgress, metrics }: CopyOptions): Promise<CopyResult> {
  setMaxListeners(64, signal) // each block read in flight listens to it
  const source = await openSource(input.source, metrics)
  const opened = new Map<string, Awaited<ReturnType<typeof openTarget>>>()
  const failed: { id: string; error: Error }[] = []
  try {
    const reader = await openVhd(source, input.sourcePath, { signal })
    const differencing = reader.footer.diskType === DISK_TYPES.DIFFERENCING
    const sameParent = (t: DiskTarget): boolean => (t.parent === undefined ? !differencing : differencing && posix.normalize(posix.join(posix.dirname(t.path), reader.header.parentUnicodeName)) === t.parent.path)
    if (reader.kind === 'file' && input.targets.every((t) => !t.directory && sameParent(t))) {
      const copied = await copyFile({ source: input.source, sourcePath: input.sourcePath, targets: input.targets.map((t) => ({ id: t.id, url: t.url, options: t.options, path: t.path })) }, { signal, ...(onProgress === undefined ? {} : { onProgress }), ...(metrics === undefined ? {} : { metrics }) })
      return { ...copied, differencing }
    }
    await Promise.all(input.targets.map(async (t) => {
      try {
        if (differencing !== (t.parent !== undefined)) throw new BackupProxyError('E_BACKUP', `${input.sourcePath} is ${differencing ? 'a delta but no parent was found' : 'a full but a parent was given'} for ${t.path}`)
        opened.set(t.id, await openTarget(t, signal, metrics, blockPool))
      } catch (error) {
        failed.push({ id: t.id, error: toError(error) })
      }
    }))
    if (opened.size === 0) throw new BackupProxyError('E_BACKUP', `no target could take ${input.sourcePath}: ${failed.map((f) => `${f.id}: ${f.error.message}`).join('; ')}`, { fields: { retryable: false } })
    const order = reader.blockIndexes()
    const sizes = new Map<string, number>()
    let readBytes = 0
    let lastReport = 0
    const targets: FanOutTarget<VhdBlock>[] = [...opened].map(([id, { sink }]) => ({
      id,
      begin: () => sink.begin(reader.footer, reader.header, order),
      write: (block) => sink.writeBlock(block),
      end: async () => {
        sizes.set(id, (await sink.end()).sizeBytes)
      },
      abort: (reason) => sink.abort(reason),
    }))
    async function* blocks(): AsyncGenerator<VhdBlock> {
      for await (const block of readAhead((i) => reader.readBlock(i, signal), order)) {
        readBytes += block.buffer.length
        metrics?.bytesRead(block.buffer.length)
        if (performance.now() - lastReport > 250) {
          lastReport = performance.now()
          onProgress?.({ readBytes })
        }
        yield block
      }
    }
    const result = await fanOut(blocks(), targets, { signal, maxPendingPerTarget: 2 })
    onProgress?.({ readBytes })
    return {
      readBytes,
      sizeBytes: Math.max(0, ...sizes.values()),
      differencing,
      succeeded: result.succeeded.sort(),
      failed: [...failed, ...result.failed].map((f) => ({ id: f.id, error: serializeError(f.error) })),
    }
  } finally {
    for (const o of opened.values()) o.lease.release()
    await source.close().catch(() => undefined)
  }
}

/** Writes a chunk and waits for 'drain' when the stream asks (rejects on its 'error'). */
async function writeAll(out: Writable, chunk: Buffer): Promise<void> {
  if (!out.write(chunk)) await once(out, 'drain')
}

interface Lane {
  id: string
  remote: Remote
  /** the streaming path's writer */
  out?: Writable
  /** published by the target's copyFrom (the kernel copied it) */
  copied?: boolean
  error?: Error
}

/**
 * A target of copyFile opened: its remote copies the file itself when it can (Remote.copyFrom: two local
 * remotes, the bytes copied by the kernel, published whole), else a write stream for the streaming path.
 * A file with a checksum to verify is always streamed (the digest is computed from the bytes read).
 */
async function openLane(t: CopyFileInput['targets'][number], source: Remote, input: CopyFileInput, size: number, signal: AbortSignal, metrics: DiskMetrics | undefined): Promise<Lane> {
  const remote = createRemote(t.url, t.options)
  metrics?.attachRemote(remote, t.id)
  const lane: Lane = { id: t.id, remote }
  try {
    await remote.open()
    if (input.checksum === undefined && (await remote.copyFrom(source, input.sourcePath, t.path, { expectedSizeBytes: size, signal }))) lane.copied = true
    else lane.out = await remote.createWriteStream(t.path, { expectedSizeBytes: size, signal })
  } catch (error) {
    lane.error = toError(error)
  }
  return lane
}

export async function copyFile(input: CopyFileInput, { signal, onProgress, metrics }: CopyOptions): Promise<CopyResult> {
  // computed only when there is one to check, with the algorithm it names (XO's format: xva/checksum.ts)
  const check = input.checksum === undefined ? undefined : ChecksumCheck.of(input.checksum)
  if (input.checksum !== undefined && check === undefined) throw new BackupProxyError('E_BACKUP', `${input.sourcePath}.checksum is not a checksum in Xen Orchestra's format ($1$$<md5>, $5$$<sha256> or $6$$<sha512>): the source backup is damaged`, { fields: { retryable: false } })
  const source = await openSource(input.source, metrics)
  const remotes: Lane[] = []
  try {
    const { size } = await source.stat(input.sourcePath)
    for (const t of input.targets) {
      const lane = await openLane(t, source, input, size, signal, metrics)
      remotes.push(lane)
    }
    let readBytes = 0
    let lastReport = 0
    const streamed = remotes.some((l) => l.out !== undefined && l.error === undefined)
    if (!streamed && remotes.some((l) => l.copied === true)) {
      readBytes = size // every target that took it copied it in the kernel, its size checked
      metrics?.bytesRead(size)
    }
    const stream = streamed ? await source.createReadStream(input.sourcePath, { signal }) : []
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      check?.update(chunk)
      readBytes += chunk.length
      metrics?.bytesRead(chunk.length)
      await Promise.all(remotes.filter((l) => l.out !== undefined && l.error === undefined).map(async (l) => {
        try {
          await writeAll(l.out!, chunk)
        } catch (error) {
          l.error = toError(error)
          l.out!.destroy(l.error)
        }
      }))
      if (performance.now() - lastReport > 250) {
        lastReport = performance.now()
        onProgress?.({ readBytes })
      }
    }
    onProgress?.({ readBytes })
    const digest = check?.actual()
    const bad = readBytes !== size && streamed ? `${input.sourcePath}: read ${readBytes} bytes, the file has ${size}` : digest !== undefined && check?.expected !== digest ? `${input.sourcePath}: checksum ${digest} differs from the recorded ${input.checksum} (the source backup is corrupt)` : undefined
    if (bad !== undefined) throw new BackupProxyError('E_BACKUP', bad, { fields: { retryable: false } })
    await Promise.all(remotes.filter((l) => l.out !== undefined && l.error === undefined).map(async (l) => {
      try {
        l.out!.end()
        await finished(l.out!)
      } catch (error) {
        l.error = toError(error)
      }
    }))
    const ok = remotes.filter((l) => l.error === undefined).map((l) => l.id)
    if (ok.length === 0) throw new BackupProxyError('E_BACKUP', `no target could take ${input.sourcePath}: ${remotes.map((l) => `${l.id}: ${l.error?.message ?? '?'}`).join('; ')}`)
    return { readBytes, sizeBytes: readBytes, differencing: false, succeeded: ok.sort(), failed: remotes.filter((l) => l.error !== undefined).map((l) => ({ id: l.id, error: serializeError(l.error) })) }
  } catch (error) {
    // nothing published: every temporary is removed
    for (const l of remotes) l.out?.destroy(toError(error))
    throw error
  } finally {
    await Promise.all([source, ...remotes.map((l) => l.remote)].map((r) => r.close().catch(() => undefined)))
  }
}

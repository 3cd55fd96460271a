/**
 * One disk's export, end to end, in the thread that runs it: open the XAPI export from its descriptor,
 * parse and validate the VHD stream, and fan the blocks out to one VHD writer per target remote (each
 * remote opened in this thread from its URL, and kept open for the thread's next disks by a RemoteCache:
 * nothing but plain data crosses threads). This is the `DiskExporter`
 * port; the pool task (disk-thread-task.ts) wraps it, tests and the demo may also call it directly.
 *
 * The written VHD's footer carries the snapshot VDI's uuid (XO finds bases by it) and, for a delta, its
 * header names the parent on that target (uuid, footer timestamp, relative path). Progress (bytes read)
 * is reported at most every 250 ms. Cancel: the signal destroys the export stream and aborts every
 * writer (temporaries removed). Nothing is published unless the whole stream parsed and validated.
 */
import { posix } from 'node:path'
import { BackupProxyError, XapiError, errorCode, serializeError, toError } from '../common/errors.js'
import { RemoteCache, type RemoteLease } from '../remotes/cache.js'
import type { Remote } from '../remotes/remote.js'
import { VhdBlockPool } from '../vhd/block-pool.js'
import { VhdChunkPlan } from '../vhd/chunk-plan.js'
import { DISK_TYPES } from '../vhd/constants.js'
import { createVhdFileSink } from '../vhd/file-sink.js'
import type { VhdSink } from '../vhd/sink.js'
import type { VhdBlock } from '../vhd/stream-parser.js'
import type { VdiExportDescriptor } from '../xapi/export.js'
import { openDiskSource } from './nbd-source.js'
import { AllTargetsFailedError, fanOut, type FanOutTarget } from '../common/fan-out.js'
import type { DiskExportInput, DiskExportOptions, DiskExportResult, DiskExporter, DiskMetrics, DiskTarget } from './ports.js'
import { createDirectorySink, readVhdFooter } from './vhd-ops.js'

const PROGRESS_INTERVAL_MS = 250
/**
 * Block buffers of every disk exported by this thread (one pool per thread: a pool per export would leave
 * its free buffers to a garbage collector that an idle pool thread never runs, doubling the memory a
 * thread holds between two disks). At most 8 free buffers (16 MiB of 2 MiB blocks) stay between disks.
 */
const blockPool = new VhdBlockPool({ maxFree: 8 })
/**
 * Blocks read ahead of the parser: one keeps the socket busy while the writers write (the fan-out window
 * adds 2 per target; the socket stops while the stream is paused and takes a block's buffer only once the
 * stream is read, socket-export.ts), so a disk to one remote holds 4 blocks (8 MiB) at a time. Two held one more block per disk in flight
 * (bench backup-rss: 2 MiB × 4 disks) for no measurable speed (bench backup, full → 1 local vs curl,
 * alternated runs); a fan-out window of 1 per target, on the contrary, was slower (docs/backup.md, Memory).
 */
const READ_AHEAD_CHUNKS = 1
/**
 * Remotes opened by this thread's exports, by URL and options: a VM's disks (and the next run's) reuse
 * them; one unused for 30 s is closed.
 */
export const threadRemotes = new RemoteCache({ idleMs: 30_000 })

interface OpenedTarget {
  lease: RemoteLease
  sink: VhdSink
}

export async function openTarget(t: DiskTarget, signal: AbortSignal, metrics: DiskMetrics | undefined, pool: VhdBlockPool): Promise<OpenedTarget> {
  // metrics attached before a new remote opens (its open counted), else to the cached one
  let detach: (() => void) | undefined
  const attach = (r: Remote): void => {
    detach = metrics?.attachRemote(r, t.id)
  }
  let lease: RemoteLease
  try {
    lease = await threadRemotes.acquire(t.url, t.options, { beforeOpen: attach })
  } catch (error) {
    detach?.()
    throw error
  }
  const remote = lease.remote
  if (detach === undefined) attach(remote)
  const release = (): void => {
    detach?.()
    lease.release()
  }
  try {
    let parent
    if (t.parent !== undefined) {
      const parentFooter = await readVhdFooter(remote, t.parent.path)
      if (parentFooter.uuid !== t.parent.uuid) {
        throw new BackupProxyError('E_BACKUP', `the parent ${t.parent.path} on ${remote.displayUrl} has uuid ${parentFooter.uuid}, expected ${t.parent.uuid}: run verify on this remote`)
      }
      parent = { relativePath: posix.relative(posix.dirname(t.path), t.parent.path), uuid: parentFooter.uuid, timestamp: parentFooter.timestamp }
    }
    // a block buffer goes back to the pool once every writer is done with it: a VhdDirectory once the
    // block's file is written (any remote); a VhdFile only where the remote's writer is done with a chunk
    // when its write callback fires (its capabilities say; S3 parts, NFS/SMB write windows may hold it)
    const written = (b: VhdBlock): void => pool.done(b.buffer)
    const sink = t.directory
      ? await createDirectorySink(remote, t.path, { compression: t.compression, signal, onBlockWritten: written, ...(parent === undefined ? {} : { parent }) })
      : createVhdFileSink(remote, t.path, { exclusive: true, signal, ...(parent === undefined ? {} : { parent }), ...(remote.capabilities.releasesChunkOnWriteCallback ? { onBlockWritten: written } : {}) })
    return { lease: { remote, release }, sink }
  } catch (error) {
    release()
    throw error
  }
}

export const runDiskExport: DiskExporter = async (input, options) => {
  try {
    return await exportDisk(input, options)
  } catch (error) {
    throw stalledAsXapiError(error, options.signal)
  }
}

/**
 * An export that stopped sending (backup.exportInactivityTimeoutMs) failed on XAPI's side: E_XAPI, so the
 * VM and the run end in failure. E_TIMEOUT stays the run's own timeout, which the task log reads as an
 * interruption (a stall reported as E_TIMEOUT made the whole run `interrupted`).
 */
function stalledAsXapiError(error: unknown, signal: AbortSignal): unknown {
  if (signal.aborted || errorCode(error) !== 'E_TIMEOUT') return error
  return new XapiError(`${(error as Error).message} (backup.exportInactivityTimeoutMs)`, { cause: error, fields: { reason: 'stalled' } })
}

async function exportDisk(input: DiskExportInput, { signal, onProgress, metrics }: DiskExportOptions): Promise<DiskExportResult> {
  const t0 = performance.now()
  const opened = new Map<string, OpenedTarget>()
  const pool = blockPool
  const openFailures: { id: string; error: Error }[] = []
  const descriptor = input.descriptor as unknown as VdiExportDescriptor
  // the socket reads each block straight into a pooled block buffer (chunk-plan.ts): one copy, by the
  // kernel; a buffer goes back to the pool once every writer reported it written, else to the GC.
  // NBD (nbd-source.ts) when planned: opened first, since its fallback may turn a delta into a full
  const plan = new VhdChunkPlan(pool)
  const source = await openDiskSource({ descriptor, nbd: input.nbd, signal, pool, plan, maxRateBytesPerSecond: input.maxExportRateBytesPerSecond, readAheadChunks: READ_AHEAD_CHUNKS, ...(input.exportInactivityTimeoutMs === undefined ? {} : { inactivityTimeoutMs: input.exportInactivityTimeoutMs }) })
  const vhd = source.vhd
  await Promise.all(input.targets.map(async (t) => {
    try {
      const { parent: _parent, ...full } = t
      opened.set(t.id, await openTarget(source.becameFull ? full : t, signal, metrics, pool))
    } catch (error) {
      openFailures.push({ id: t.id, error: toError(error) })
    }
  }))
  try {
    if (opened.size === 0) {
      throw new AllTargetsFailedError(openFailures, 'no target could be opened')
    }
    const exp = source
    const differencing = vhd.footer.diskType === DISK_TYPES.DIFFERENCING
    if (input.baseVdiUuid !== undefined && !differencing && !source.becameFull) throw new BackupProxyError('E_BACKUP', `XAPI sent a full disk where a delta against ${input.baseVdiUuid} was asked`)
    const footer = { ...vhd.footer, uuid: input.vdiUuid }
    const sizes = new Map<string, number>()
    let last = 0
    let counted = 0
    const report = (force: boolean) => {
      const now = performance.now()
      if (!force && now - last < PROGRESS_INTERVAL_MS) return
      last = now
      metrics?.bytesRead(vhd.bytesRead - counted)
      counted = vhd.bytesRead
      onProgress?.({ readBytes: vhd.bytesRead, ...(exp.sizeBytes === undefined ? {} : { totalBytes: exp.sizeBytes }) })
    }
    const targets: FanOutTarget<VhdBlock>[] = [...opened].map(([id, { sink }]) => ({
      id,
      begin: () => sink.begin(footer, vhd.header, vhd.blockOrder),
      write: (block) => sink.writeBlock(block),
      end: async () => {
        sizes.set(id, (await sink.end()).sizeBytes)
      },
      abort: (reason) => sink.abort(reason),
    }))
    async function* blocks(): AsyncGenerator<VhdBlock> {
      for await (const block of vhd.blocks()) {
        report(false)
        pool.share(block.buffer, targets.length)
        yield block
      }
    }
    const result = await fanOut(blocks(), targets, { signal, maxPendingPerTarget: 2 })
    report(true)
    metrics?.exportDuration((performance.now() - t0) / 1000)
    return {
      readBytes: vhd.bytesRead,
      sizeBytes: Math.max(0, ...sizes.values()),
      blocks: result.blocks,
      differencing,
      succeeded: result.succeeded.sort(),
      failed: [...openFailures, ...result.failed].map((f) => ({ id: f.id, error: serializeError(f.error) })),
      durationMs: performance.now() - t0,
      transport: source.transport,
      nbdConnections: source.connections,
      warnings: source.warnings,
    }
  } finally {
    await vhd.close().catch(() => undefined)
    for (const o of opened.values()) o.lease.release()
  }
}

/**
 * Fan-out: one parsed block stream written to N targets at once — the one implementation the backup
 * engine (disk-export.ts) and the VHD engine's `pumpVhd` (vhd/sink.ts) both run.
 *
 * The source is read once. Each block is handed to every live target; a target may have at most
 * `maxPendingPerTarget` blocks in flight, and the source is not read further until every live target
 * is below that window — so the slowest target paces the stream and memory stays bounded by
 * (targets × window × block size), never by disk size. Each target receives its blocks one at a time,
 * in order (the next write starts when the previous resolved); the window only lets the source read
 * ahead. Blocks are shared, not copied: the source must not reuse a block's buffer while it is in flight.
 *
 * A target that fails (begin, a write or end) is dropped: it is aborted (its temporary removed by the
 * sink), reported through `onTargetFailed`, and the others continue. `onBlockSettled` tells when no
 * target will read a block again (a source that reuses its buffers waits for it). `fanOut` rejects only when every
 * target failed (AllTargetsFailedError, with each target's error), when the source fails (a corrupt or
 * truncated export: all targets are aborted), or when the signal aborts (all aborted, CancelledError).
 */
import { BackupProxyError, CancelledError, serializeError, toError } from './errors.js'

export interface FanOutTarget<B> {
  /** target id (remote id) for reports */
  readonly id: string
  begin(): Promise<void>
  write(block: B): Promise<void>
  /** completes and publishes the target's file */
  end(): Promise<void>
  /** removes what was written; must not throw for an already failed target */
  abort(reason: Error): Promise<void>
}

interface FanOutOptions<B> {
  /** blocks in flight per target, default 2 */
  maxPendingPerTarget?: number
  signal?: AbortSignal
  onTargetFailed?: (id: string, error: Error) => void
  /** called once per block when no target will touch it again: every live target's write of it settled (done or failed) */
  onBlockSettled?: (block: B) => void
}

interface FanOutResult {
  succeeded: string[]
  failed: { id: string; error: Error }[]
  blocks: number
}

/**
 * The one "every target failed" error of the engine (fan-out, disk export, VM backup): each target's id
 * and error, in the message and in `fields.targets`; `context` (e.g. `VM <uuid>`) prefixes the message.
 */
export class AllTargetsFailedError extends BackupProxyError {
  constructor(readonly failures: readonly { id: string; error: Error }[], context?: string) {
    super('E_BACKUP', `${context === undefined ? '' : `${context}: `}every target failed: ${failures.map((f) => `${f.id}: ${f.error.message}`).join('; ')}`, {
      fields: { targets: failures.map((f) => ({ id: f.id, error: serializeError(f.error).message })) },
    })
  }
}

interface Lane<B> {
  target: FanOutTarget<B>
  pending: Promise<void>[]
  error?: Error
}

export async function fanOut<B>(source: AsyncIterable<B>, targets: readonly FanOutTarget<B>[], options: FanOutOptions<B> = {}): Promise<FanOutResult> {
  const window = options.maxPendingPerTarget ?? 2
  if (!Number.isInteger(window) || window < 1) throw new RangeError(`maxPendingPerTarget must be a whole number >= 1, got ${window}`)
  if (targets.length === 0) throw new RangeError('fanOut needs at least one target')
  const signal = options.signal
  const lanes: Lane<B>[] = targets.map((target) => ({ target, pending: [] }))
  const failed: { id: string; error: Error }[] = []

  const drop = async (lane: Lane<B>, error: unknown): Promise<void> => {
    if (lane.error !== undefined) return
    lane.error = toError(error)
    failed.push({ id: lane.target.id, error: lane.error })
    options.onTargetFailed?.(lane.target.id, lane.error)
    try {
      await lane.target.abort(lane.error)
    } catch (abortError) {
      // the target already failed; its abort error is kept as the cause chain of the report
      lane.error = new BackupProxyError('E_BACKUP', `${lane.error.message} (and cleaning up failed: ${toError(abortError).message})`, { cause: lane.error })
      failed[failed.length - 1] = { id: lane.target.id, error: lane.error }
    }
  }
  const live = () => lanes.filter((l) => l.error === undefined)
  const abortAll = async (reason: Error) => {
    await Promise.all(live().map(async (l) => {
      await Promise.allSettled(l.pending)
      l.error = reason
      await l.target.abort(reason).catch(() => undefined)
    }))
  }
  const checkLive = () => {
    if (live().length === 0) throw new AllTargetsFailedError(failed)
  }

  await Promise.all(lanes.map(async (l) => l.target.begin().catch((e: unknown) => drop(l, e))))
  checkLive()

  let blocks = 0
  try {
    for await (const block of source) {
      if (signal?.aborted === true) throw new CancelledError('the export was cancelled', { cause: signal.reason })
      blocks++
      const settled = options.onBlockSettled
      const writes: Promise<void>[] | undefined = settled === undefined ? undefined : []
      for (const lane of live()) {
        // writes to one target are sequential (a sink takes one block at a time); the window lets the
        // source read ahead while the targets write
        const previous = lane.pending.at(-1) ?? Promise.resolve()
        const p: Promise<void> = previous
          .then(() => (lane.error === undefined ? lane.target.write(block) : undefined))
          .catch((e: unknown) => drop(lane, e))
          .finally(() => {
          const i = lane.pending.indexOf(p)
          if (i !== -1) void lane.pending.splice(i, 1)
        })
        lane.pending.push(p)
        writes?.push(p)
      }
      if (settled !== undefined && writes !== undefined) void Promise.all(writes).then(() => settled(block))
      // pace by the slowest live target
      for (const lane of live()) {
        while (lane.error === undefined && lane.pending.length >= window) await lane.pending[0]
      }
      checkLive()
    }
    if (signal?.aborted === true) throw new CancelledError('the export was cancelled', { cause: signal.reason })
  } catch (error) {
    await abortAll(toError(error))
    throw error
  }

  await Promise.all(live().map(async (l) => {
    await Promise.all(l.pending)
    if (l.error !== undefined) return
    await l.target.end().catch((e: unknown) => drop(l, e))
  }))
  checkLive()
  return { succeeded: live().map((l) => l.target.id), failed, blocks }
}

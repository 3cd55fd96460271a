/**
 * The writer contract of the VHD engine: a VhdSink receives one parsed VHD (head, then blocks in
 * stream order) and publishes it on a remote only when `end()` has validated it. The backup engine fans
 * one parsed stream out to several sinks (one per remote) and paces them by the slowest: each
 * `writeBlock` resolves when the sink can take the next block (backpressure), `abort` removes whatever
 * the sink wrote (temporaries), and nothing is ever visible under the final name before `end()`.
 *
 * `pumpVhd` is that fan-out for one stream: blocks go to every sink still alive, a sink that fails is
 * aborted and dropped while the others go on, and the run fails only when every sink failed.
 */
import { CancelledError, toError } from '../common/errors.js'
import type { VhdFooter } from './footer.js'
import type { VhdHeader } from './header.js'
import type { VhdBlock, VhdStream } from './stream-parser.js'

/** The parent a differencing VHD is chained to on the remote. */
export interface VhdParentRef {
  /** path of the parent relative to the child's directory (what XO stores in parentUnicodeName) */
  relativePath: string
  /** the parent's footer UUID */
  uuid: string
  /** the parent's footer timestamp */
  timestamp: number
}

export interface VhdSinkResult {
  /** final path (for a VhdDirectory: the alias) */
  path: string
  /** bytes stored (after compression) */
  sizeBytes: number
  blocks: number
}

export interface VhdSink {
  /** `blockOrder`: indexes of the blocks that will be written, in order (the stream's blockOrder) */
  begin(footer: VhdFooter, header: VhdHeader, blockOrder: readonly number[]): Promise<void>
  /** resolves when the sink can take the next block; the block's buffers must not be modified after */
  writeBlock(block: VhdBlock): Promise<void>
  /** checks every announced block was written, then publishes under the final name */
  end(): Promise<VhdSinkResult>
  /** removes temporaries; the final name is left as it was. Idempotent. */
  abort(reason: unknown): Promise<void>
}

export interface PumpResult {
  results: Map<VhdSink, VhdSinkResult>
  failures: Map<VhdSink, Error>
}

/**
 * Writes a parsed VHD stream to every sink, paced by the slowest. A failing sink is aborted and dropped;
 * throws (after aborting every sink) when the stream itself fails or when every sink failed.
 */
export async function pumpVhd(vhd: VhdStream, sinks: readonly VhdSink[], options: { signal?: AbortSignal } = {}): Promise<PumpResult> {
  const failures = new Map<VhdSink, Error>()
  let alive = [...sinks]
  const step = async (fn: (sink: VhdSink) => Promise<void>): Promise<void> => {
    const settled = await Promise.allSettled(alive.map(fn))
    const failed: VhdSink[] = []
    settled.forEach((s, i) => {
      if (s.status === 'rejected') {
        const sink = alive[i] as VhdSink
        failures.set(sink, toError(s.reason))
        failed.push(sink)
      }
    })
    if (failed.length > 0) {
      alive = alive.filter((s) => !failed.includes(s))
      await Promise.allSettled(failed.map((s) => s.abort(failures.get(s))))
      if (alive.length === 0) throw new AggregateError([...failures.values()], `every VHD writer failed: ${[...failures.values()].map((e) => e.message).join('; ')}`)
    }
  }
  try {
    await step((s) => s.begin(vhd.footer, vhd.header, vhd.blockOrder))
    for await (const block of vhd.blocks()) {
      if (options.signal?.aborted === true) throw new CancelledError('the VHD copy was cancelled', { cause: options.signal.reason })
      await step((s) => s.writeBlock(block))
    }
    const results = new Map<VhdSink, VhdSinkResult>()
    await step(async (s) => {
      results.set(s, await s.end())
    })
    return { results, failures }
  } catch (error) {
    await Promise.allSettled(alive.map((s) => s.abort(error)))
    await vhd.close()
    throw error
  }
}

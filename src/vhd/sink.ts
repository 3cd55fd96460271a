/**
 * The writer contract of the VHD engine: a VhdSink receives one parsed VHD (head, then blocks in
 * stream order) and publishes it on a remote only when `end()` has validated it. The backup engine fans
 * one parsed stream out to several sinks (one per remote) and paces them by the slowest: each
 * `writeBlock` resolves when the sink can take the next block (backpressure), `abort` removes whatever
 * the sink wrote (temporaries), and nothing is ever visible under the final name before `end()`.
 *
 * `pumpVhd` runs that fan-out (common/fan-out.ts, the engine's own) for one stream: blocks go to every
 * sink still alive, a sink that fails is aborted and dropped while the others go on, and the run fails
 * only when every sink failed.
 */
import { fanOut, type FanOutTarget } from '../common/fan-out.js'
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
  begin(footer: VhdFooter, header: VhdHeader, blockOrder: ArrayLike<number>): Promise<void>
  /** resolves when the sink can take the next block; the block's buffers must not be modified after */
  writeBlock(block: VhdBlock): Promise<void>
  /** checks every announced block was written, then publishes under the final name */
  end(): Promise<VhdSinkResult>
  /** removes temporaries; the final name is left as it was. Idempotent. */
  abort(reason: unknown): Promise<void>
}

interface PumpResult {
  results: Map<VhdSink, VhdSinkResult>
  failures: Map<VhdSink, Error>
}

/**
 * Writes a parsed VHD stream to every sink, paced by the slowest (one block in flight per sink): the
 * engine's fan-out (common/fan-out.ts) with sinks as targets. A failing sink is aborted and dropped;
 * throws (after aborting every sink and closing the stream) when the stream itself fails, when the
 * signal aborts, or when every sink failed (AllTargetsFailedError).
 */
export async function pumpVhd(vhd: VhdStream, sinks: readonly VhdSink[], options: { signal?: AbortSignal } = {}): Promise<PumpResult> {
  const results = new Map<VhdSink, VhdSinkResult>()
  const failures = new Map<VhdSink, Error>()
  const targets: FanOutTarget<VhdBlock>[] = sinks.map((sink, i) => ({
    id: String(i),
    begin: () => sink.begin(vhd.footer, vhd.header, vhd.blockOrder),
    write: (block) => sink.writeBlock(block),
    end: async () => {
      results.set(sink, await sink.end())
    },
    abort: (reason) => sink.abort(reason),
  }))
  try {
    const { failed } = await fanOut(vhd.blocks(), targets, { maxPendingPerTarget: 1, ...(options.signal === undefined ? {} : { signal: options.signal }) })
    for (const f of failed) failures.set(sinks[Number(f.id)] as VhdSink, f.error)
    return { results, failures }
  } catch (error) {
    await vhd.close()
    throw error
  }
}

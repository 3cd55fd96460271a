/**
 * Process-wide V8 settings for a process that streams disk data through fresh Buffers, applied once
 * at startup by the CLI entry point, and by the bench harness so that benchmarks measure what the
 * product runs. V8 flags are per process (worker threads share them), so this belongs to whoever owns
 * the process, never to a library module.
 *
 * `--no-concurrent-array-buffer-sweeping`: with V8 11 (Node 20) the memory of dead ArrayBuffers is
 * released by a background job, and V8 subtracts it from its external-memory count only once that job
 * has been picked up. A stream that hands out fresh buffers at ~1 GiB/s (an SMB READ frame per MiB,
 * an export slab per 4 MiB) therefore looks to V8 like external memory growing without bound, and it
 * runs a full mark-compact every 40–60 MiB. Sweeping ArrayBuffers during the (young) GC itself keeps
 * the count right; the sweep of a few hundred buffers costs microseconds. Measured on an SMB read of
 * 1 GiB in a bench-like process: 17 mark-compacts → 0, 0.65 → 0.28 CPU s/GiB, 1.4 → 2.2 GiB/s
 * (docs/smb.md, Performance).
 */
import { setFlagsFromString } from 'node:v8'

let applied = false

/** Applies the settings above (idempotent; call it before starting worker threads). */
export function applyGcTuning(): void {
  if (applied) return
  applied = true
  setFlagsFromString('--no-concurrent-array-buffer-sweeping')
}

let serveApplied = false

/**
 * For the long-lived `serve` process, on top of applyGcTuning: `--semi-space-growth-factor=1` keeps every
 * young generation at its initial size (1 MiB semi-spaces) instead of letting V8 grow it towards 16 MiB
 * and keep it. The proxy's main thread allocates in bursts (module loading at start, a job's task log)
 * and then little; grown, its young generation held 32 MiB of RSS for nothing (bench backup-rss: main
 * thread heap 65 -> 38 MiB, peak RSS of the proxy ~20 MiB lower). The flag is process-wide: the stream
 * threads keep 1 MiB semi-spaces too (their young generation is capped by the pool's resourceLimits
 * anyway; disk data lives in pooled buffers outside the V8 heap, see src/workers/pool.ts). Unlike the
 * size flags, V8 reads this one whenever it would grow a young generation, so it applies after startup.
 */
export function applyServeGcTuning(): void {
  applyGcTuning()
  if (serveApplied) return
  serveApplied = true
  setFlagsFromString('--semi-space-growth-factor=1')
}

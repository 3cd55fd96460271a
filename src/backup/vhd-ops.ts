/**
 * VHD operations the backup engine needs on a remote, over the VHD engine (src/vhd): a VHD's footer (a
 * parent's uuid and timestamp), the VhdDirectory writer, merging a chain after retention (resumable,
 * see src/vhd/merge.ts), and removing a VHD (file, or alias + its data directory).
 */
import type { Remote } from '../remotes/remote.js'
import { createVhdDirectorySink } from '../vhd/directory-sink.js'
import type { VhdFooter } from '../vhd/footer.js'
import { mergeVhd } from '../vhd/merge.js'
import { isAlias, openVhd, resolveAlias } from '../vhd/open.js'
import type { VhdParentRef, VhdSink } from '../vhd/sink.js'
import type { VhdBlock } from '../vhd/stream-parser.js'

export async function readVhdFooter(remote: Remote, path: string): Promise<VhdFooter> {
  return (await openVhd(remote, path)).footer
}

interface DirectorySinkOptions {
  /** as XO's VhdDirectory writer: brotli or none (chunk-filters.json records it) */
  compression: 'none' | 'brotli'
  parent?: VhdParentRef
  signal?: AbortSignal
  /** each block once its file is written (see VhdDirectorySinkOptions.onBlockWritten) */
  onBlockWritten?: (block: VhdBlock) => void
}

export function createDirectorySink(remote: Remote, path: string, options: DirectorySinkOptions): Promise<VhdSink> {
  return Promise.resolve(
    createVhdDirectorySink(remote, path, {
      compression: options.compression,
      ...(options.parent === undefined ? {} : { parent: options.parent }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      ...(options.onBlockWritten === undefined ? {} : { onBlockWritten: options.onBlockWritten }),
    }),
  )
}

/** Merges `chain` (oldest first) into its last element, which keeps its name; the others are removed. */
export async function mergeChain(remote: Remote, chain: readonly string[], signal?: AbortSignal): Promise<void> {
  for (let i = 0; i + 1 < chain.length; i++) {
    await mergeVhd(remote, chain[i]!, chain[i + 1]!, signal === undefined ? {} : { signal })
  }
}

export async function removeVhd(remote: Remote, path: string): Promise<void> {
  if (isAlias(path)) await remote.rmtree(await resolveAlias(remote, path))
  await remote.unlink(path)
}

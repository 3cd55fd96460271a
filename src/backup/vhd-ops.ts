/**
 * VHD operations the backup engine needs on a remote, on top of the VHD engine (src/vhd): merging a
 * chain after retention, removing a VHD (file, or alias + data directory).
 */
import type { Remote } from '../remotes/remote.js'
import { NotAvailableError } from '../common/errors.js'

/** Merges `chain` (oldest first) into its last element, which keeps its name. */
export async function mergeChain(_remote: Remote, _chain: readonly string[]): Promise<void> {
  await Promise.resolve()
  throw new NotAvailableError('VHD merge')
}

export async function removeVhd(remote: Remote, path: string): Promise<void> {
  await remote.unlink(path)
}

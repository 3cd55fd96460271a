/**
 * VHD operations the backup engine needs on a remote, on top of the VHD engine (src/vhd): reading a
 * VHD's footer (a parent's uuid and timestamp), the VhdDirectory writer, merging a chain after
 * retention, removing a VHD (file, or alias + data directory).
 */
import { posix } from 'node:path'
import type { Remote } from '../remotes/remote.js'
import { NotAvailableError } from '../common/errors.js'
import { decodeFooter, type VhdFooter } from '../vhd/footer.js'
import { FOOTER_SIZE } from '../vhd/constants.js'
import type { VhdParentRef, VhdSink } from '../vhd/sink.js'

async function readRange(remote: Remote, path: string, start: number, length: number): Promise<Buffer> {
  const stream = await remote.createReadStream(path, { start, end: start + length - 1 })
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

/** Remote-root path of the data directory an alias points to (XO: path relative to the alias's dir). */
export async function resolveAlias(remote: Remote, aliasPath: string): Promise<string> {
  const target = (await remote.readFile(aliasPath)).toString('utf8').trim()
  const resolved = posix.normalize(posix.join(posix.dirname(aliasPath), target))
  return remote.resolvePath(resolved.replace(/\/$/, ''))
}

export async function readVhdFooter(remote: Remote, path: string): Promise<VhdFooter> {
  if (path.endsWith('.alias.vhd')) {
    const dir = await resolveAlias(remote, path)
    return decodeFooter(await remote.readFile(`${dir}/footer`))
  }
  return decodeFooter(await readRange(remote, path, 0, FOOTER_SIZE))
}

export interface DirectorySinkOptions {
  compression: 'none' | 'brotli' | 'zstd'
  parent?: VhdParentRef
  signal?: AbortSignal
}

export async function createDirectorySink(_remote: Remote, _path: string, _options: DirectorySinkOptions): Promise<VhdSink> {
  await Promise.resolve()
  throw new NotAvailableError('the VhdDirectory writer')
}

/** Merges `chain` (oldest first) into its last element, which keeps its name. */
export async function mergeChain(_remote: Remote, _chain: readonly string[]): Promise<void> {
  await Promise.resolve()
  throw new NotAvailableError('VHD merge')
}

export async function removeVhd(remote: Remote, path: string): Promise<void> {
  if (path.endsWith('.alias.vhd')) {
    await remote.rmtree(await resolveAlias(remote, path))
  }
  await remote.unlink(path)
}

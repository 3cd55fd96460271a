/**
 * `loadRemote(url, options)`: createRemote (./index.ts) for a command that opens one remote. It imports
 * only the implementation of the URL's scheme (and the encryption layer only with a key), where
 * createRemote's module imports all four: for `backups ls file://...` that is the NFS, SMB and S3 code
 * (~0.1 s of CPU, BENCHMARKS.md "cli start") it never runs. Same remote, same errors, same order.
 */
import { checkEncryptionOptions, mergedRemoteOptions } from './options.js'
import type { Remote } from './remote.js'
import type { RemoteOptions, RemoteUrl } from './url-types.js'
import { parseRemoteUrl } from './url.js'

export async function loadRemote(url: string | RemoteUrl, options: RemoteOptions = {}): Promise<Remote> {
  const parsed = typeof url === 'string' ? parseRemoteUrl(url) : url
  const merged = mergedRemoteOptions(parsed, options)
  let remote: Remote
  switch (parsed.type) {
    case 'file':
      remote = new (await import('./local.js')).LocalRemote(parsed, merged)
      break
    case 's3':
      remote = new (await import('./s3.js')).S3Remote(parsed, merged)
      break
    case 'nfs':
      remote = (await import('./nfs/index.js')).createNfsRemote(parsed, merged)
      break
    case 'smb':
      remote = (await import('./smb/index.js')).createSmbRemote(parsed, merged)
      break
  }
  if (merged.encryptionKey === undefined) return remote
  checkEncryptionOptions(parsed, merged)
  return (await import('./encryption.js')).createEncryptedRemote(remote, { key: merged.encryptionKey })
}

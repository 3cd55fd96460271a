/**
 * Entry point of the remotes: `createRemote(url, options)` picks the implementation from the URL's
 * scheme. XO's URL query options (`useVhdDirectory`, `allowUnauthorized`, `encryptionKey`) are merged
 * under the explicit options; with an encryption key the remote comes wrapped in EncryptedRemote
 * (Xen Orchestra's format; it forces VhdDirectory backups, and `useVhdDirectory: false` is refused with
 * a key, as xo-server refuses it).
 * The returned remote is not opened yet: call `open()`. A command that opens one remote uses
 * `loadRemote` (./load.ts), which imports only the implementation the URL needs.
 */
import { S3Remote } from './s3.js'
import { createEncryptedRemote } from './encryption.js'
import { LocalRemote } from './local.js'
import { createNfsRemote } from './nfs/index.js'
import type { Remote } from './remote.js'
import { createSmbRemote } from './smb/index.js'
import { checkEncryptionOptions, mergedRemoteOptions } from './options.js'
import type { RemoteOptions, RemoteUrl } from './url-types.js'
import { parseRemoteUrl } from './url.js'

export type * from './remote.js'
export type * from './url-types.js'
export { parseRemoteUrl, formatRemoteUrl } from './url.js'
export { optionsFromUrl } from './options.js'
export { loadRemote } from './load.js'

export function createRemote(url: string | RemoteUrl, options: RemoteOptions = {}): Remote {
  const parsed = typeof url === 'string' ? parseRemoteUrl(url) : url
  const merged = mergedRemoteOptions(parsed, options)
  let remote: Remote
  switch (parsed.type) {
    case 'file':
      remote = new LocalRemote(parsed, merged)
      break
    case 's3':
      remote = new S3Remote(parsed, merged)
      break
    case 'nfs':
      remote = createNfsRemote(parsed, merged)
      break
    case 'smb':
      remote = createSmbRemote(parsed, merged)
      break
  }
  if (merged.encryptionKey === undefined) return remote
  checkEncryptionOptions(parsed, merged)
  return createEncryptedRemote(remote, { key: merged.encryptionKey })
}

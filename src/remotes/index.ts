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
import { makeRemote, resolveRemote, type RemoteMakers } from './make.js'
import type { RemoteOptions, RemoteUrl } from './url-types.js'

export type * from './remote.js'
export type * from './url-types.js'
export { parseRemoteUrl, formatRemoteUrl } from './url.js'
export { optionsFromUrl } from './options.js'
export { loadRemote } from './load.js'

const ALL_MAKERS: RemoteMakers = {
  file: (url, options) => new LocalRemote(url, options),
  s3: (url, options) => new S3Remote(url, options),
  nfs: createNfsRemote,
  smb: createSmbRemote,
  encrypt: (inner, key) => createEncryptedRemote(inner, { key }),
}

export function createRemote(url: string | RemoteUrl, options: RemoteOptions = {}): Remote {
  const resolved = resolveRemote(url, options)
  return makeRemote(resolved.url, resolved.options, ALL_MAKERS)
}

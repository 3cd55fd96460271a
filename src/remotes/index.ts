/**
 * Entry point of the remotes: `createRemote(url, options)` picks the implementation from the URL's
 * scheme. XO's URL query options (`useVhdDirectory`, `allowUnauthorized`, `encryptionKey`) are merged
 * under the explicit options; with an encryption key the remote comes wrapped in EncryptedRemote
 * (Xen Orchestra's format; it forces VhdDirectory backups, and `useVhdDirectory: false` is refused with
 * a key, as xo-server refuses it).
 * The returned remote is not opened yet: call `open()`.
 */
import { RemoteUrlError } from '../common/errors.js'
import { S3Remote } from './s3.js'
import { createEncryptedRemote } from './encryption.js'
import { LocalRemote } from './local.js'
import { createNfsRemote } from './nfs/index.js'
import type { Remote } from './remote.js'
import { createSmbRemote } from './smb/index.js'
import type { RemoteOptions, RemoteUrl } from './url-types.js'
import { parseRemoteUrl, redactRemoteUrl } from './url.js'

export type * from './remote.js'
export type * from './url-types.js'
export { parseRemoteUrl, formatRemoteUrl } from './url.js'

/** Options carried in the URL's query string, typed and checked. */
export function optionsFromUrl(url: RemoteUrl): RemoteOptions {
  const p = url.params ?? {}
  const out: RemoteOptions = {}
  const bool = (key: string): boolean | undefined => {
    const v = p[key]
    if (v === undefined) return undefined
    if (typeof v !== 'boolean') throw new RemoteUrlError(`remote URL ${redactRemoteUrl(url)}: option ${key} must be true or false, got ${JSON.stringify(v)}`)
    return v
  }
  const useVhdDirectory = bool('useVhdDirectory')
  if (useVhdDirectory !== undefined) out.useVhdDirectory = useVhdDirectory
  const allowUnauthorized = bool('allowUnauthorized')
  if (allowUnauthorized !== undefined) out.allowUnauthorized = allowUnauthorized
  const pathStyle = bool('pathStyle')
  if (pathStyle !== undefined) out.s3PathStyle = pathStyle
  const key = p.encryptionKey
  if (key !== undefined && key !== null && key !== false && key !== '') {
    if (typeof key !== 'string') throw new RemoteUrlError(`remote URL ${redactRemoteUrl(url)}: option encryptionKey must be a string`)
    out.encryptionKey = key
  }
  return out
}

export function createRemote(url: string | RemoteUrl, options: RemoteOptions = {}): Remote {
  const parsed = typeof url === 'string' ? parseRemoteUrl(url) : url
  const merged: RemoteOptions = { ...optionsFromUrl(parsed), ...options }
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
  if (merged.useVhdDirectory === false) {
    // as xo-server: whole-file encryption allows no ranged read, which a VhdFile needs
    throw new RemoteUrlError(`remote ${redactRemoteUrl(parsed)}: encryption must be used with VHD directory (data blocks); drop useVhdDirectory=false or the encryption key`)
  }
  return createEncryptedRemote(remote, { key: merged.encryptionKey })
}

/**
 * The options of a remote: those XO carries in the URL's query string (typed and checked) under the
 * explicit ones, and the rule an encryption key brings. Shared by createRemote (./index.ts) and
 * loadRemote (./load.ts).
 */
import { RemoteUrlError } from '../common/errors.js'
import type { RemoteOptions, RemoteUrl } from './url-types.js'
import { redactRemoteUrl } from './url.js'

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

/** The URL's options under the explicit ones. */
export function mergedRemoteOptions(url: RemoteUrl, options: RemoteOptions): RemoteOptions {
  return { ...optionsFromUrl(url), ...options }
}

/** With an encryption key: VhdDirectory backups only. */
export function checkEncryptionOptions(url: RemoteUrl, merged: RemoteOptions): void {
  if (merged.useVhdDirectory === false) {
    // as xo-server: whole-file encryption allows no ranged read, which a VhdFile needs
    throw new RemoteUrlError(`remote ${redactRemoteUrl(url)}: encryption must be used with VHD directory (data blocks); drop useVhdDirectory=false or the encryption key`)
  }
}

/**
 * SMB remote entry point: `createSmbRemote(url, options)` (used by ../index.ts). See remote.ts for the
 * remote and client.ts for the protocol client; docs/smb.md for the design.
 */
import type { Remote } from '../remote.js'
import type { RemoteOptions, SmbRemoteUrl } from '../url-types.js'
import { SmbRemote } from './remote.js'

export function createSmbRemote(url: SmbRemoteUrl, options: RemoteOptions = {}): Remote {
  return new SmbRemote(url, options)
}

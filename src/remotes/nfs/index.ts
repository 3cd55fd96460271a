/**
 * NFS remote (`nfs://host[:port]:/export/path`): a userspace NFSv3 client over TCP, so the proxy needs
 * no root and no kernel mount. See docs/nfs.md and nfs-remote.ts.
 */
import type { Remote } from '../remote.js'
import type { NfsRemoteUrl, RemoteOptions } from '../url-types.js'
import { NfsRemote } from './nfs-remote.js'

export { NfsRemote } from './nfs-remote.js'

export function createNfsRemote(url: NfsRemoteUrl, options: RemoteOptions = {}): Remote {
  return new NfsRemote(url, options)
}

/**
 * `loadRemote(url, options)`: createRemote (./index.ts) for a command that opens one remote. It imports
 * only the implementation of the URL's scheme (and the encryption layer only with a key), where
 * createRemote's module imports all four: for `backups ls file://...` that is the NFS, SMB and S3 code
 * (~0.1 s of CPU, BENCHMARKS.md "cli start") it never runs. The remote is made by the same makeRemote
 * (./make.ts): same remote, same errors, same order.
 */
import { makeRemote, resolveRemote, type RemoteMakers } from './make.js'
import type { Remote } from './remote.js'
import type { RemoteOptions, RemoteUrl } from './url-types.js'

export async function loadRemote(url: string | RemoteUrl, options: RemoteOptions = {}): Promise<Remote> {
  const resolved = resolveRemote(url, options)
  const makers: RemoteMakers = await makerOf(resolved.url.type)
  if (resolved.options.encryptionKey !== undefined) {
    const { createEncryptedRemote } = await import('./encryption.js')
    makers.encrypt = (inner, key) => createEncryptedRemote(inner, { key })
  }
  return makeRemote(resolved.url, resolved.options, makers)
}

async function makerOf(type: RemoteUrl['type']): Promise<RemoteMakers> {
  switch (type) {
    case 'file': {
      const { LocalRemote } = await import('./local.js')
      return { file: (url, options) => new LocalRemote(url, options) }
    }
    case 's3': {
      const { S3Remote } = await import('./s3.js')
      return { s3: (url, options) => new S3Remote(url, options) }
    }
    case 'nfs':
      return { nfs: (await import('./nfs/index.js')).createNfsRemote }
    case 'smb':
      return { smb: (await import('./smb/index.js')).createSmbRemote }
  }
}

/**
 * The one way a remote is made from its URL: parse, merge the URL's options under the explicit ones,
 * construct the scheme's implementation, and wrap it in the encryption layer when a key is given.
 * Two callers hand it the implementations: createRemote (./index.ts) from static imports, for the engine
 * whose calls are synchronous, and loadRemote (./load.ts) from the one dynamic import its URL needs, for
 * the CLI's start-up CPU. The implementations table is the only thing they differ by.
 */
import { RemoteUrlError } from '../common/errors.js'
import { checkEncryptionOptions, mergedRemoteOptions } from './options.js'
import type { Remote } from './remote.js'
import type { FileRemoteUrl, NfsRemoteUrl, RemoteOptions, RemoteUrl, S3RemoteUrl, SmbRemoteUrl } from './url-types.js'
import { parseRemoteUrl, redactRemoteUrl } from './url.js'

type Maker<U extends RemoteUrl> = (url: U, options: RemoteOptions) => Remote

/** The constructors of each scheme and of the encryption layer; loadRemote fills only those it needs. */
export interface RemoteMakers {
  file?: Maker<FileRemoteUrl>
  s3?: Maker<S3RemoteUrl>
  nfs?: Maker<NfsRemoteUrl>
  smb?: Maker<SmbRemoteUrl>
  encrypt?: (inner: Remote, key: string) => Remote
}

/** The parsed URL and its merged options: what a caller needs to know which makers to provide. */
export function resolveRemote(url: string | RemoteUrl, options: RemoteOptions): { url: RemoteUrl; options: RemoteOptions } {
  const parsed = typeof url === 'string' ? parseRemoteUrl(url) : url
  return { url: parsed, options: mergedRemoteOptions(parsed, options) }
}

export function makeRemote(url: RemoteUrl, options: RemoteOptions, makers: RemoteMakers): Remote {
  const remote = makeBare(url, options, makers)
  if (options.encryptionKey === undefined) return remote
  checkEncryptionOptions(url, options)
  return need(makers.encrypt, url, 'encryption')(remote, options.encryptionKey)
}

function makeBare(url: RemoteUrl, options: RemoteOptions, makers: RemoteMakers): Remote {
  switch (url.type) {
    case 'file':
      return need(makers.file, url, url.type)(url, options)
    case 's3':
      return need(makers.s3, url, url.type)(url, options)
    case 'nfs':
      return need(makers.nfs, url, url.type)(url, options)
    case 'smb':
      return need(makers.smb, url, url.type)(url, options)
  }
}

function need<F>(maker: F | undefined, url: RemoteUrl, what: string): F {
  // a caller that did not load what this URL needs: a defect of ours, named as such
  if (maker === undefined) throw new RemoteUrlError(`remote ${redactRemoteUrl(url)}: internal error, the ${what} implementation was not loaded; report this defect`)
  return maker
}

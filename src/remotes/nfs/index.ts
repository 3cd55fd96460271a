/** NFS remote (userspace NFSv3) — being written (issue 7). */
import { NotAvailableError } from '../../common/errors.js'
import type { NfsRemoteUrl, RemoteOptions } from '../url-types.js'

export function createNfsRemote(_url: NfsRemoteUrl, _options: RemoteOptions = {}): never {
  throw new NotAvailableError('the NFS remote')
}

/** SMB remote (userspace SMB 2/3) — being written (issue 7). */
import { NotAvailableError } from '../../common/errors.js'
import type { RemoteOptions, SmbRemoteUrl } from '../url-types.js'

export function createSmbRemote(_url: SmbRemoteUrl, _options: RemoteOptions = {}): never {
  throw new NotAvailableError('the SMB remote')
}

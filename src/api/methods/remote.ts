/**
 * `remote.*` with XO's result shapes, run by this proxy on the remote xo-server describes:
 *   test     {success: true, writeRate, readRate} (bytes per second, from our write/read probe), or
 *            {success: false, error: message} (XO stores the message as the remote's error)
 *   getInfo  space figures (size, used, available in bytes) where the remote can tell (local
 *            directories); `{}` elsewhere, as XO's own handlers answer for S3
 *   ping     {success: true} once the remote opens
 *   getTotalBackupSize  {onDisk: bytes} of the VM backups on it
 */
import { statfs } from 'node:fs/promises'
import { z } from 'zod'
import { redactString } from '../../common/redact.js'
import { parseRemoteUrl } from '../../remotes/url.js'
import { method, type MethodDefinition } from '../rpc.js'
import { totalBackupSize } from '../xo-backups.js'
import { withXoRemote, xoRemoteParam } from './deps.js'

const MiB = 1024 * 1024
const remoteParams = z.object({ remote: xoRemoteParam }).strict()

export function remoteMethods(): Record<string, MethodDefinition> {
  return {
    'remote.test': method('tests a remote: write, read and delete a probe file', remoteParams, async ({ remote }) => {
      try {
        const r = await withXoRemote(remote, (rem) => rem.test())
        return { success: true, writeRate: Math.round(r.writeMiBps * MiB), readRate: Math.round(r.readMiBps * MiB) }
      } catch (error) {
        return { success: false, error: redactString(error instanceof Error ? error.message : String(error)) }
      }
    }),
    'remote.getInfo': method('space of a remote (local directories only)', remoteParams, async ({ remote }) =>
      withXoRemote(remote, async () => {
        const url = parseRemoteUrl(remote.url)
        if (url.type !== 'file') return {}
        const s = await statfs(url.path)
        const size = s.blocks * s.bsize
        const available = s.bavail * s.bsize
        return { size, used: size - s.bfree * s.bsize, available }
      }),
    ),
    'remote.getTotalBackupSize': method('size of the VM backups on a remote', remoteParams, async ({ remote }) => withXoRemote(remote, (r) => totalBackupSize(r))),
    'remote.ping': method('checks a remote opens', remoteParams, async ({ remote }) => withXoRemote(remote, () => Promise.resolve({ success: true }))),
  }
}

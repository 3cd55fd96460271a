/** The VHD tests write through the real local remote (src/remotes/local.ts) rooted in a temp directory. */
import { mkdir } from 'node:fs/promises'
import { LocalRemote } from '../../src/remotes/local.js'

export async function localRemote(root: string): Promise<LocalRemote> {
  await mkdir(root, { recursive: true })
  const remote = new LocalRemote({ type: 'file', path: root })
  await remote.open()
  return remote
}

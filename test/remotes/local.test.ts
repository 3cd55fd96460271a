/** The conformance suite on a temp dir, plus what only the local remote does (fsync'd temp files on disk). */
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { createRemote } from '../../src/remotes/index.js'
import { LocalRemote } from '../../src/remotes/local.js'
import { useTempDir } from '../helpers/tmp.js'
import { describeRemoteConformance, expectCode } from './conformance.js'

const tmp = useTempDir('bp-local-remote-')

describeRemoteConformance('local', async () => {
  await Promise.resolve()
  return createRemote(`file://${tmp()}`)
})

// the same contract through client-side encryption (XO's whole-file format): only ranged reads differ
describeRemoteConformance(
  'local, encrypted',
  async () => {
    const root = join(tmp(), 'encrypted')
    await mkdir(root, { recursive: true })
    return createRemote(`file://${root}`, { encryptionKey: 'conformance-key-0123456789abcdef' })
  },
  { wholeFileReads: true, skipEncryption: true },
)

describe('local remote specifics', () => {
  it('refuses a missing root instead of creating it', async () => {
    const remote = new LocalRemote({ type: 'file', path: join(tmp(), 'not-mounted') })
    await expectCode(remote.open(), 'ENOENT')
  })

  it('keeps the temporary hidden beside the final file while writing, then renames it', async () => {
    const root = join(tmp(), 'specific')
    await mkdir(root)
    const remote = new LocalRemote({ type: 'file', path: root })
    await remote.open()
    const out = await remote.createWriteStream('d/f.vhd')
    await new Promise<void>((resolve, reject) => out.write(Buffer.alloc(10), (e) => (e ? reject(e) : resolve())))
    const during = await readdir(join(root, 'd'))
    expect(during).toHaveLength(1)
    expect(during[0]).toMatch(/^\.f\.vhd\.[0-9a-f]+\.tmp$/)
    await new Promise<void>((resolve) => out.end(resolve))
    expect(await readdir(join(root, 'd'))).toEqual(['f.vhd'])
  })

  it('rmtree of the root is refused; unlink of a directory is EISDIR', async () => {
    const root = join(tmp(), 'specific2')
    await mkdir(join(root, 'dir'), { recursive: true })
    await writeFile(join(root, 'x'), 'x')
    const remote = new LocalRemote({ type: 'file', path: root })
    await expectCode(remote.rmtree(''), 'EACCES')
    await expectCode(remote.unlink('dir'), 'EISDIR')
  })
})

/**
 * The local remote never reads through a symlink that leads out of its root (a link planted on a shared
 * backup directory must not turn `restore` or `remote ls` into a reader of the host's files); links that
 * stay inside the root work as before.
 */
import { mkdir, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { LocalRemote } from '../../src/remotes/local.js'
import { useTempDir } from '../helpers/tmp.js'
import { expectCode } from './conformance.js'

const tmp = useTempDir('bp-local-links-')
let remote: LocalRemote

beforeAll(async () => {
  const root = join(tmp(), 'root')
  const outside = join(tmp(), 'outside')
  await mkdir(join(root, 'in'), { recursive: true })
  await mkdir(outside)
  await writeFile(join(outside, 'secret'), 'host secret')
  await writeFile(join(root, 'in', 'ok'), 'inside')
  await symlink(join(outside, 'secret'), join(root, 'file-out'))
  await symlink(outside, join(root, 'dir-out'))
  await symlink(join(root, 'in', 'ok'), join(root, 'file-in'))
  remote = new LocalRemote({ type: 'file', path: root })
  await remote.open()
})

describe('local remote and symlinks', () => {
  it('refuses to read a file through a link out of the root (readFile, createReadStream, stat)', async () => {
    await expectCode(remote.readFile('file-out'), 'EACCES')
    await expectCode(remote.createReadStream('file-out'), 'EACCES')
    await expectCode(remote.stat('file-out'), 'EACCES')
    await expectCode(remote.readFile('dir-out/secret'), 'EACCES')
    await expectCode(remote.createReadStream('dir-out/secret'), 'EACCES')
    await expectCode(remote.openFile('file-out'), 'EACCES')
    await expectCode(remote.openFile('dir-out/secret'), 'EACCES')
  })

  it('refuses to list a directory out of the root', async () => {
    await expectCode(remote.list('dir-out'), 'EACCES')
  })

  it('reads through links that stay inside the root', async () => {
    expect((await remote.readFile('file-in')).toString()).toBe('inside')
    expect((await remote.stat('file-in')).size).toBe(6)
    const file = await remote.openFile('file-in')
    const buffer = Buffer.alloc(6)
    expect(await file.read(buffer, 0, 6, 0)).toBe(6)
    await file.close()
    expect(buffer.toString()).toBe('inside')
  })
})

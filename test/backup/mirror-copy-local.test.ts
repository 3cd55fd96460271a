/**
 * The mirror's kernel copy between two local remotes (Remote.copyFrom, used by mirror-copy's copyFile):
 * a local → local copy is taken (the target's `copyFrom` op, no write stream, the source never read by a
 * stream) and is exact; a target that cannot (an encrypted local remote) still gets the streaming path
 * and the same bytes; copyFrom publishes only whole: a refused copy (existing name with `exclusive`, a
 * symlink out of the source's root, an aborted signal, a directory) leaves nothing on the target, not
 * even a temporary.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { copyFile } from '../../src/backup/mirror-copy.js'
import type { DiskMetrics } from '../../src/backup/ports.js'
import { createRemote } from '../../src/remotes/index.js'
import type { RemoteEvents } from '../../src/remotes/remote.js'
import { useTempDir } from '../helpers/tmp.js'

const tmp = useTempDir('bp-mirror-copy-local-')
const KEY = '0123456789abcdef0123456789abcdef'
const FILE = 'xo-vm-backups/vm/20261205T120000Z.xva'

/** Metrics that record every remote's ops by its id. */
function recorder(): { metrics: DiskMetrics; ops: Map<string, string[]>; read: number[] } {
  const ops = new Map<string, string[]>()
  const read: number[] = []
  const metrics: DiskMetrics = {
    bytesRead: (n) => read.push(n),
    exportDuration: () => undefined,
    attachRemote: (remote, id) => {
      const list = ops.get(id) ?? []
      ops.set(id, list)
      const on = (e: RemoteEvents['op'][0]) => list.push(e.op)
      remote.on('op', on)
      return () => remote.off('op', on)
    },
  }
  return { metrics, ops, read }
}

async function source(name: string, data: Buffer): Promise<string> {
  const root = join(tmp(), name)
  await mkdir(join(root, 'xo-vm-backups/vm'), { recursive: true })
  await writeFile(join(root, FILE), data)
  return root
}

async function everything(root: string): Promise<string[]> {
  return (await readdir(root, { recursive: true })).sort()
}

describe('mirror copy between local remotes', () => {
  it('a local target copies in the kernel, exact; an encrypted one is streamed', async () => {
    const data = randomBytes(5 * 1024 * 1024 + 7)
    const src = await source('src', data)
    const [plain, enc] = [join(tmp(), 'plain'), join(tmp(), 'enc')]
    await mkdir(plain)
    await mkdir(enc)
    const { metrics, ops, read } = recorder()
    const signal = new AbortController().signal
    const only = await copyFile({ source: { url: `file://${src}`, options: {} }, sourcePath: FILE, targets: [{ id: 'plain', url: `file://${plain}`, options: {}, path: FILE }] }, { signal, metrics })
    expect(only).toMatchObject({ readBytes: data.length, sizeBytes: data.length, succeeded: ['plain'], failed: [] })
    expect(ops.get('plain')).toContain('copyFrom')
    expect(ops.get('plain')).not.toContain('createWriteStream')
    expect(ops.get('source')).not.toContain('createReadStream')
    expect(read).toEqual([data.length])
    expect((await createRemote(`file://${plain}`).readFile(FILE)).equals(data)).toBe(true)
    expect(await everything(plain)).toEqual(['xo-vm-backups', 'xo-vm-backups/vm', FILE]) // no temporary left

    const mixed = recorder()
    const both = await copyFile(
      { source: { url: `file://${src}`, options: {} }, sourcePath: FILE, targets: [{ id: 'enc', url: `file://${enc}`, options: { encryptionKey: KEY }, path: FILE }] },
      { signal, metrics: mixed.metrics },
    )
    expect(both.succeeded).toEqual(['enc'])
    expect(mixed.ops.get('enc')).toContain('createWriteStream')
    expect(mixed.ops.get('source')).toContain('createReadStream')
    const encrypted = createRemote(`file://${enc}`, { encryptionKey: KEY })
    await encrypted.open()
    expect((await encrypted.readFile(FILE)).equals(data)).toBe(true)
  })

  it('copyFrom publishes only whole: refused copies leave nothing on the target', async () => {
    const data = randomBytes(1024 * 1024)
    const srcRoot = await source('src2', data)
    await writeFile(join(tmp(), 'outside'), data)
    await symlink(join(tmp(), 'outside'), join(srcRoot, 'xo-vm-backups/vm/link'))
    const dstRoot = join(tmp(), 'dst2')
    await mkdir(join(dstRoot, 'd'), { recursive: true })
    await writeFile(join(dstRoot, 'd/existing'), 'keep')
    const [s, d] = [createRemote(`file://${srcRoot}`), createRemote(`file://${dstRoot}`)]
    await s.open()
    await d.open()
    await expect(d.copyFrom(s, FILE, 'd/existing', { exclusive: true })).rejects.toMatchObject({ code: 'EEXIST' })
    await expect(d.copyFrom(s, 'xo-vm-backups/vm/link', 'd/link')).rejects.toMatchObject({ code: 'EACCES' })
    await expect(d.copyFrom(s, 'xo-vm-backups/vm', 'd/dir')).rejects.toMatchObject({ code: 'EISDIR' })
    await expect(d.copyFrom(s, FILE, 'd/aborted', { signal: AbortSignal.abort() })).rejects.toThrow()
    await expect(d.copyFrom(s, 'xo-vm-backups/vm/absent', 'd/absent')).rejects.toMatchObject({ code: 'ENOENT' })
    expect(await everything(dstRoot)).toEqual(['d', 'd/existing'])
    expect((await d.readFile('d/existing')).toString()).toBe('keep')
    // and a copy that is possible is exact
    expect(await d.copyFrom(s, FILE, 'd/copy', { exclusive: true })).toBe(true)
    expect((await d.readFile('d/copy')).equals(data)).toBe(true)
    expect(await everything(dstRoot)).toEqual(['d', 'd/copy', 'd/existing'])
    // a remote that is not a plain local one: nothing done, false
    await mkdir(join(tmp(), 'enc2'))
    const e = createRemote(`file://${join(tmp(), 'enc2')}`, { encryptionKey: KEY })
    await e.open()
    await e.writeFile('d/copy', data)
    expect(await e.copyFrom(s, FILE, 'd/enc')).toBe(false)
    expect(await d.copyFrom(e, 'd/copy', 'd/back')).toBe(false)
    expect(await everything(dstRoot)).toEqual(['d', 'd/copy', 'd/existing'])
  })
})

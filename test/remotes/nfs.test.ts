/**
 * The NFS remote against the run's NFS-Ganesha (test/services/nfs.ts, started by the global setup):
 * the shared conformance suite, then what only NFS does (MOUNT errors, option checks, the hidden
 * temporary while writing, AUTH_SYS uid/gid on created files).
 */
import { randomBytes } from 'node:crypto'
import { finished } from 'node:stream/promises'
import { describe, expect, inject, it } from 'vitest'
import { ConfigInvalidError } from '../../src/common/errors.js'
import { createRemote } from '../../src/remotes/index.js'
import { NfsRemote } from '../../src/remotes/nfs/index.js'
import { parseRemoteUrl } from '../../src/remotes/url.js'
import type { NfsRemoteUrl } from '../../src/remotes/url-types.js'
import { describeRemoteConformance, expectCode } from './conformance.js'

const nfsUrl = inject('nfsUrl')
if (nfsUrl === null) throw new Error('the NFS test server did not start: run with BACKUP_PROXY_TEST_SERVICES including nfs')
const parsed = parseRemoteUrl(nfsUrl) as NfsRemoteUrl

describeRemoteConformance('nfs', async () => {
  await Promise.resolve()
  return createRemote(nfsUrl)
})

describe('nfs remote specifics', { timeout: 60_000 }, () => {
  it('fails open() with ENOENT naming the exports when the export does not exist', async () => {
    const remote = new NfsRemote({ ...parsed, path: '/export/nope' })
    const error = await expectCode(remote.open(), 'ENOENT')
    expect(error.message).toContain('/export/nope')
    expect(error.message).toContain(parsed.path) // the list of what the server exports
    await remote.close()
  })

  it('opens a directory below the export, as a kernel mount would; a missing one is ENOENT', async () => {
    const top = new NfsRemote(parsed)
    const sub = `below-${randomBytes(4).toString('hex')}`
    try {
      await top.mkdir(`${sub}/inner`)
      const below = new NfsRemote({ ...parsed, path: `${parsed.path}/${sub}` })
      await below.writeFile('inner/x.txt', 'from below')
      expect((await top.readFile(`${sub}/inner/x.txt`)).toString()).toBe('from below')
      expect(await below.list('')).toEqual([{ path: 'inner', isDirectory: true }])
      await below.close()
      const missing = new NfsRemote({ ...parsed, path: `${parsed.path}/${sub}/nope` })
      const error = await expectCode(missing.open(), 'ENOENT')
      expect(error.message).toContain(`${sub}/nope`)
      await missing.close()
    } finally {
      await top.rmtree(sub)
      await top.close()
    }
  })

  it('fails with ECONNRESET when nothing listens (wrong NFS port)', async () => {
    const remote = new NfsRemote({ ...parsed, port: 2 })
    const error = await expectCode(remote.open(), 'ECONNRESET')
    expect(error.message).toMatch(/cannot connect/)
    await remote.close()
  })

  it('validates its options up front', () => {
    expect(() => new NfsRemote(parsed, { nfsWindow: 0 })).toThrow(ConfigInvalidError)
    expect(() => new NfsRemote(parsed, { uid: -1 })).toThrow(/uid/)
    expect(() => new NfsRemote(parsed, { gid: 1.5, nfsWindow: 1000 })).toThrow(/gid[\s\S]*nfsWindow/)
  })

  it('writes through a hidden temporary, one WRITE window at a time (nfsWindow = 1 works too)', async () => {
    const remote = new NfsRemote(parsed, { nfsWindow: 1 })
    await remote.open()
    const dir = `specific-${randomBytes(4).toString('hex')}`
    try {
      const out = await remote.createWriteStream(`${dir}/f.vhd`)
      const data = randomBytes(3 * 1024 * 1024 + 5)
      await new Promise<void>((resolve, reject) => out.write(data, (e) => (e ? reject(e) : resolve())))
      const during = await remote.list(dir, { includeHidden: true })
      expect(during).toHaveLength(1)
      expect(during[0]?.path).toMatch(/^\.f\.vhd\.[0-9a-f]+\.tmp$/)
      out.end()
      await finished(out)
      expect((await remote.list(dir, { includeHidden: true })).map((e) => e.path)).toEqual(['f.vhd'])
      expect((await remote.readFile(`${dir}/f.vhd`)).equals(data)).toBe(true)
    } finally {
      await remote.rmtree(dir)
      await remote.close()
    }
  })

  it('keeps data intact with small WRITE/READ sizes (many blocks, COMMITs while writing, ranges across blocks)', async () => {
    const remote = new NfsRemote(parsed, { nfsWindow: 3 }, { maxBlockBytes: 64 * 1024 })
    const dir = `small-${randomBytes(4).toString('hex')}`
    try {
      const data = randomBytes(5 * 1024 * 1024 + 333)
      const out = await remote.createWriteStream(`${dir}/f.bin`)
      for (let at = 0; at < data.length; at += 100_000) {
        if (!out.write(data.subarray(at, at + 100_000))) await new Promise((r) => out.once('drain', r))
      }
      out.end()
      await finished(out)
      expect((await remote.readFile(`${dir}/f.bin`)).equals(data)).toBe(true)
      const chunks: Buffer[] = []
      for await (const c of await remote.createReadStream(`${dir}/f.bin`, { start: 65_530, end: 3 * 65_536 + 7 })) chunks.push(c as Buffer)
      expect(Buffer.concat(chunks).equals(data.subarray(65_530, 3 * 65_536 + 8))).toBe(true)
    } finally {
      await remote.rmtree(dir)
      await remote.close()
    }
  })

  it('unlink of a directory is EISDIR; rmtree of the root is refused', async () => {
    const remote = new NfsRemote(parsed)
    await remote.open()
    const dir = `specific-${randomBytes(4).toString('hex')}`
    try {
      await remote.mkdir(`${dir}/sub`)
      await expectCode(remote.unlink(`${dir}/sub`), 'EISDIR')
      await expectCode(remote.rmtree(''), 'EACCES')
    } finally {
      await remote.rmtree(dir)
      await remote.close()
    }
  })
})

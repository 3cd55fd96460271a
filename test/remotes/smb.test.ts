/**
 * The SMB remote against a real Samba smbd: the conformance suite on the shared test server
 * (127.0.0.1:445, started by test/setup/global.ts), then what only SMB does, each on its own private
 * smbd (free port) when the test needs a special server or kills it.
 */
import { randomBytes } from 'node:crypto'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { finished } from 'node:stream/promises'
import { afterAll, describe, expect, inject, it } from 'vitest'
import type { RemoteError } from '../../src/common/errors.js'
import { runCli } from '../../src/cli/program.js'
import { createRemote, formatRemoteUrl } from '../../src/remotes/index.js'
import type { Remote } from '../../src/remotes/remote.js'
import { parseRemoteUrl } from '../../src/remotes/url.js'
import type { SmbRemoteUrl } from '../../src/remotes/url-types.js'
import { startSambaServer, type SambaServer } from '../services/smb.js'
import { describeRemoteConformance, expectCode } from './conformance.js'

const smbUrl = inject('smbUrl')
if (smbUrl === null) throw new Error('the SMB test server did not start: run with BACKUP_PROXY_TEST_SERVICES including smb')

describeRemoteConformance('smb', async () => {
  await Promise.resolve()
  return createRemote(smbUrl)
})

const MiB = 1024 * 1024

function urlOf(server: SambaServer): SmbRemoteUrl {
  const parsed = parseRemoteUrl(server.url)
  if (parsed.type !== 'smb') throw new Error('not an smb URL')
  return parsed
}

describe('smb remote specifics', () => {
  const servers: SambaServer[] = []
  const remotes: Remote[] = []
  afterAll(async () => {
    for (const r of remotes) await r.close()
    for (const s of servers) await s.stop()
  })
  const server = async (signing: 'default' | 'mandatory' = 'default') => {
    const s = await startSambaServer({ signing })
    servers.push(s)
    return s
  }
  const remote = (url: string | SmbRemoteUrl, options: Parameters<typeof createRemote>[1] = {}) => {
    const r = createRemote(url, options)
    remotes.push(r)
    return r
  }

  it('negotiates every dialect from 2.1 to 3.1.1 and round-trips data with each', async () => {
    for (const version of ['2.1', '3.0', '3.0.2', '3.1.1']) {
      const r = remote(smbUrl, { protocolVersion: version })
      await r.open()
      const data = randomBytes(3 * MiB + 17)
      const path = `dialects/${version}.bin`
      await r.writeFile(path, data)
      expect((await r.readFile(path)).equals(data), version).toBe(true)
      await r.unlink(path)
      await r.close()
    }
    expect(() => createRemote(smbUrl, { protocolVersion: '1.0' })).toThrow(/unsupported SMB protocol version "1.0"/)
  })

  it('a producer that reuses its buffer once called back gets exactly what it wrote (chunks sent without a copy or gathered)', async () => {
    const r = remote(smbUrl)
    await r.open()
    // around the 1 MiB WRITE size: small, top-up, exact, several WRITEs plus a tail
    const sizes = [100 * 1024, 2.5 * MiB, MiB, 3 * MiB + 5, 10, 4 * MiB, 7]
    const expected = randomBytes(sizes.reduce((a, b) => a + b, 0))
    const shared = Buffer.alloc(4 * MiB + 1)
    const out = await r.createWriteStream('reuse/one-buffer.bin')
    let pos = 0
    for (const n of sizes) {
      expected.copy(shared, 0, pos, pos + n)
      await new Promise<void>((resolve, reject) => out.write(shared.subarray(0, n), (e) => (e ? reject(e) : resolve())))
      shared.fill(0xee) // the producer reuses its buffer as soon as it is called back
      pos += n
    }
    out.end()
    await finished(out)
    expect((await r.readFile('reuse/one-buffer.bin')).equals(expected)).toBe(true)
    await r.rmtree('reuse')
  })

  it('wrong password: EACCES naming the user and never the password', async () => {
    const parsed = parseRemoteUrl(smbUrl) as SmbRemoteUrl
    const wrongPassword = `wrong-${randomBytes(4).toString('hex')}`
    const r = remote({ ...parsed, password: wrongPassword })
    const error = await expectCode(r.open(), 'EACCES')
    expect(error.message).toMatch(/authentication of user "WORKGROUP\\backup"/)
    expect(error.message).toMatch(/STATUS_LOGON_FAILURE/)
    const everything = JSON.stringify(error.toJSON())
    expect(everything).not.toContain(wrongPassword)
    expect(everything).not.toContain(parsed.password)
  })

  it('share not found: ENOENT naming the share', async () => {
    const parsed = parseRemoteUrl(smbUrl) as SmbRemoteUrl
    const error = await expectCode(remote({ ...parsed, share: 'no-such-share' }).open(), 'ENOENT')
    expect(error.message).toMatch(/share "no-such-share" does not exist/)
  })

  it('a missing sub-directory root is ENOENT at open', async () => {
    const parsed = parseRemoteUrl(smbUrl) as SmbRemoteUrl
    await expectCode(remote({ ...parsed, path: `missing-${randomBytes(3).toString('hex')}` }).open(), 'ENOENT')
  })

  it('an exclusive write refused at publish leaves no temporary behind', async () => {
    const r = remote(smbUrl)
    const d = `excl-${randomBytes(3).toString('hex')}`
    await r.writeFile(`${d}/x`, 'first')
    await expectCode(r.writeFile(`${d}/x`, randomBytes(3 * MiB), { exclusive: true }), 'EEXIST')
    expect(await r.list(d, { includeHidden: true })).toEqual([{ path: 'x', isDirectory: false }])
    expect((await r.readFile(`${d}/x`)).toString()).toBe('first')
    await r.rmtree(d)
  })

  it('maps NT statuses to POSIX codes (EISDIR, ENOTDIR, ENOTEMPTY)', async () => {
    const r = remote(smbUrl)
    const d = `codes-${randomBytes(3).toString('hex')}`
    await r.writeFile(`${d}/file`, 'x')
    await r.mkdir(`${d}/dir`)
    await expectCode(r.unlink(`${d}/dir`), 'EISDIR')
    await expectCode(r.list(`${d}/file`), 'ENOTDIR')
    await expectCode(r.mkdir(`${d}/file/sub`), 'ENOTDIR')
    await expectCode(r.readFile(`${d}/dir`), 'EISDIR')
    await r.rmtree(d)
  })

  it('works when the server requires signing (every dialect), and signs when asked on a server that does not', async () => {
    const s = await server('mandatory')
    for (const version of ['2.1', '3.0.2', '3.1.1']) {
      const r = remote(urlOf(s), { smbPort: s.port, protocolVersion: version })
      await r.open()
      const data = randomBytes(5 * MiB + 3)
      await r.writeFile(`signed-${version}.bin`, data)
      expect((await r.readFile(`signed-${version}.bin`)).equals(data)).toBe(true)
      expect((await r.list('')).map((e) => e.path)).toContain(`signed-${version}.bin`)
      await r.close()
    }
    const voluntary = remote(smbUrl, { smbRequireSigning: true })
    await voluntary.writeFile('signed-by-client.bin', 'signed')
    expect((await voluntary.readFile('signed-by-client.bin')).toString()).toBe('signed')
    await voluntary.unlink('signed-by-client.bin')
  })

  it('server killed mid-write: that stream errors, nothing is published, the temporary is removed on reconnection', async () => {
    const s = await server()
    const r = remote(urlOf(s), { smbPort: s.port })
    await r.open()
    await r.writeFile('before.txt', 'before')
    const out = await r.createWriteStream('vm/disk.vhd')
    const errors: Error[] = []
    out.on('error', (e) => errors.push(e))
    const block = randomBytes(4 * MiB)
    await new Promise<void>((resolve, reject) => out.write(block, (e) => (e ? reject(e) : resolve())))
    // a temporary exists, the final name does not
    const during = await readdir(join(s.shareDir, 'vm'))
    expect(during.filter((n) => n.endsWith('.tmp'))).toHaveLength(1)
    await s.kill()
    out.write(block)
    out.end()
    await finished(out).catch(() => undefined)
    expect(errors.length).toBeGreaterThan(0)
    expect((errors[0] as RemoteError).code).toMatch(/^(ECONNRESET|ETIMEDOUT)$/)
    expect(await readdir(join(s.shareDir, 'vm'))).not.toContain('disk.vhd')

    // the same share served again on the same port: later operations reconnect, the orphan goes away
    const again = await startSambaServer({ port: s.port, shareDir: s.shareDir, password: s.password })
    servers.push(again)
    expect((await r.readFile('before.txt')).toString()).toBe('before')
    expect(await readdir(join(s.shareDir, 'vm'))).toEqual([])
    await r.writeFile('vm/disk.vhd', block)
    expect((await r.stat('vm/disk.vhd')).size).toBe(block.length)
  })

  it('`backup-proxy remote test` and `remote ls` work on the SMB URL, without printing the password', async () => {
    const parsed = parseRemoteUrl(smbUrl) as SmbRemoteUrl
    let out = ''
    let err = ''
    const io = { stdout: (t: string) => (out += t), stderr: (t: string) => (err += t), isTTY: false }
    expect(await runCli(['remote', 'test', smbUrl, '--size', '3MiB', '--json'], io)).toBe(0)
    const result = JSON.parse(out) as { sizeBytes: number; readMiBps: number; remote: string }
    expect(result.sizeBytes).toBe(3 * MiB)
    expect(result.readMiBps).toBeGreaterThan(0)
    const r = remote(smbUrl)
    const d = `cli-${randomBytes(3).toString('hex')}`
    await r.writeFile(`${d}/vm1/a.json`, '{}')
    out = ''
    expect(await runCli(['remote', 'ls', smbUrl, d, '-r'], io)).toBe(0)
    expect(out).toBe('vm1/a.json\n')
    out = ''
    err = ''
    expect(await runCli(['remote', 'ls', formatRemoteUrl({ ...parsed, password: 'wrong-pass-42' }), d], io)).toBe(1)
    expect(err).toMatch(/EACCES|authentication/)
    expect(out + err).not.toContain('wrong-pass-42')
    expect(out + err).not.toContain(parsed.password)
    await r.rmtree(d)
  })

  it('refuses bad options up front', () => {
    expect(() => createRemote(smbUrl, { smbPort: 70000 })).toThrow(/smbPort must be an integer from 1 to 65535/)
    expect(() => createRemote(smbUrl, { smbWindow: 0 })).toThrow(/smbWindow/)
  })
})

/**
 * SMB client internals: crypto known-answer tests (no server needed) and protocol behaviour checked
 * against the real smbd of the test run: pipelining within the granted credits, interim STATUS_PENDING
 * responses (CHANGE_NOTIFY always goes async on Samba), NT status to POSIX mapping.
 */
import { randomBytes } from 'node:crypto'
import { describe, expect, inject, it } from 'vitest'
import { parseRemoteUrl } from '../../src/remotes/url.js'
import type { SmbRemoteUrl } from '../../src/remotes/url-types.js'
import { SmbClient } from '../../src/remotes/smb/client.js'
import { AesCmac, smb3Kdf } from '../../src/remotes/smb/crypto.js'
import { md4 } from '../../src/remotes/smb/md4.js'
import { negotiateMessage, ntowfv2, parseChallenge } from '../../src/remotes/smb/ntlm.js'
import { NtStatus, posixCode } from '../../src/remotes/smb/status.js'
import { Access, CreateOptions, Disposition, FileAttributes, HEADER_SIZE } from '../../src/remotes/smb/wire.js'
import { waitFor } from '../helpers/ports.js'

describe('SMB crypto known answers', () => {
  it('MD4 matches RFC 1320', () => {
    expect(md4(Buffer.from('')).toString('hex')).toBe('31d6cfe0d16ae931b73c59d7e0c089c0')
    expect(md4(Buffer.from('abc')).toString('hex')).toBe('a448017aaf21d8525fc10ae87aa6729d')
    expect(md4(Buffer.from('12345678901234567890123456789012345678901234567890123456789012345678901234567890')).toString('hex')).toBe('e33b4ddc9c38f2199c3e7b164fcc0536')
  })

  it('AES-CMAC matches RFC 4493, whole or split in parts', () => {
    const cmac = new AesCmac(Buffer.from('2b7e151628aed2a6abf7158809cf4f3c', 'hex'))
    const m = Buffer.from('6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710', 'hex')
    const expected: [number, string][] = [
      [0, 'bb1d6929e95937287fa37d129b756746'],
      [16, '070a16b46b4d4144f79bdd9dd04a287c'],
      [40, 'dfa66747de9ae63030ca32611497c827'],
      [64, '51f0bebf7e3b9d92fc49741779363cfe'],
    ]
    for (const [n, tag] of expected) {
      expect(cmac.mac([m.subarray(0, n)]).toString('hex')).toBe(tag)
      const cut = Math.min(n, 7)
      expect(cmac.mac([m.subarray(0, cut), m.subarray(cut, n)]).toString('hex')).toBe(tag)
    }
  })

  it('NTOWFv2 matches [MS-NLMP] 4.2.4.1.1', () => {
    expect(ntowfv2({ username: 'User', password: 'Password', domain: 'Domain' }).toString('hex')).toBe('0c868a403bfd7a93a3001ef22ef02e3f')
  })

  it('the SMB 3 KDF yields 16 bytes that depend on label and context', () => {
    const key = randomBytes(16)
    const a = smb3Kdf(key, Buffer.from('SMBSigningKey\0'), Buffer.alloc(64, 1))
    expect(a.length).toBe(16)
    expect(a.equals(smb3Kdf(key, Buffer.from('SMBSigningKey\0'), Buffer.alloc(64, 2)))).toBe(false)
    expect(a.equals(smb3Kdf(key, Buffer.from('SMB2AESCMAC\0'), Buffer.alloc(64, 1)))).toBe(false)
  })

  it('NTLMSSP: negotiate is a type 1 message; a challenge without target info is refused (no NTLMv1 fallback)', () => {
    const n = negotiateMessage()
    expect(n.subarray(0, 8).toString('latin1')).toBe('NTLMSSP\0')
    expect(n.readUInt32LE(8)).toBe(1)
    const challenge = Buffer.alloc(48)
    Buffer.from('NTLMSSP\0', 'latin1').copy(challenge)
    challenge.writeUInt32LE(2, 8)
    expect(() => parseChallenge(challenge)).toThrow(/NTLMv1 is refused/)
  })

  it('maps NT statuses to POSIX codes', () => {
    expect(posixCode(NtStatus.OBJECT_NAME_NOT_FOUND)).toBe('ENOENT')
    expect(posixCode(NtStatus.OBJECT_PATH_NOT_FOUND)).toBe('ENOENT')
    expect(posixCode(NtStatus.OBJECT_NAME_COLLISION)).toBe('EEXIST')
    expect(posixCode(NtStatus.DIRECTORY_NOT_EMPTY)).toBe('ENOTEMPTY')
    expect(posixCode(NtStatus.ACCESS_DENIED)).toBe('EACCES')
    expect(posixCode(NtStatus.LOGON_FAILURE)).toBe('EACCES')
    expect(posixCode(NtStatus.DISK_FULL)).toBe('ENOSPC')
    expect(posixCode(NtStatus.FILE_IS_A_DIRECTORY)).toBe('EISDIR')
    expect(posixCode(NtStatus.NOT_A_DIRECTORY)).toBe('ENOTDIR')
    expect(posixCode(0xc0000999)).toBe('EIO')
  })
})

describe('SMB protocol against smbd', () => {
  const smbUrl = inject('smbUrl')
  const connect = async (maxDialect = '3.1.1') => {
    if (smbUrl === null) throw new Error('the SMB test server did not start')
    const u = parseRemoteUrl(smbUrl) as SmbRemoteUrl
    return SmbClient.connect({
      host: u.host, port: 445, share: u.share, username: u.username, password: u.password, domain: u.domain,
      maxDialect, requireSigning: false, ioSizeBytes: 1024 * 1024, connectTimeoutMs: 10_000, requestTimeoutMs: 60_000,
    })
  }

  it('keeps several large WRITEs and READs in flight within the granted credits', async () => {
    const client = await connect()
    try {
      const name = `proto-${randomBytes(4).toString('hex')}.bin`
      const f = await client.create(name, {
        access: Access.FILE_READ_DATA | Access.FILE_WRITE_DATA | Access.DELETE | Access.SYNCHRONIZE,
        disposition: Disposition.CREATE, options: CreateOptions.NON_DIRECTORY_FILE, attributes: FileAttributes.NORMAL,
      })
      const data = randomBytes(16 * client.maxWriteBytes)
      const before = client.conn.stats.maxInFlight
      await Promise.all(Array.from({ length: 16 }, (_, i) => client.write(f.fileId, i * client.maxWriteBytes, data.subarray(i * client.maxWriteBytes, (i + 1) * client.maxWriteBytes))))
      expect(client.conn.stats.maxInFlight).toBeGreaterThan(Math.max(before, 4))
      const copiedBefore = client.conn.stats.copiedBytes
      const parts = await Promise.all(Array.from({ length: 16 }, (_, i) => client.read(f.fileId, i * client.maxReadBytes, client.maxReadBytes)))
      expect(Buffer.concat(parts).equals(data)).toBe(true)
      // READ data lands in its frame straight from the socket: only headers go through the shared buffer
      expect(client.conn.stats.copiedBytes - copiedBefore).toBeLessThan(16 * 1024)
      expect(client.conn.stats.credits).toBeGreaterThan(16)
      await client.setInfo(f.fileId, 13, Buffer.from([1]))
      await client.close(f.fileId)
    } finally {
      await client.disconnect()
    }
  })

  it('waits through an interim STATUS_PENDING for the final response (CHANGE_NOTIFY)', async () => {
    const client = await connect()
    const other = await connect('2.1')
    try {
      const dir = `notify-${randomBytes(4).toString('hex')}`
      const d = await client.create(dir, {
        access: Access.FILE_LIST_DIRECTORY | Access.DELETE | Access.SYNCHRONIZE, disposition: Disposition.CREATE,
        options: CreateOptions.DIRECTORY_FILE, attributes: FileAttributes.DIRECTORY,
      })
      const body = Buffer.alloc(32)
      body.writeUInt16LE(32, 0)
      body.writeUInt32LE(4096, 4) // output buffer
      d.fileId.copy(body, 8)
      body.writeUInt32LE(0x1 | 0x2, 24) // FILE_NAME | DIR_NAME changes
      const notify = client.conn.request({ command: 15, body, treeId: client.treeId })
      const interim = () => client.conn.stats.interimResponses
      await waitFor('an interim response', () => interim() > 0)
      expect(interim()).toBeGreaterThan(0)
      // a change made on another connection completes the pending request
      const f = await other.create(`${dir}\\x`, { access: Access.DELETE | Access.SYNCHRONIZE, disposition: Disposition.CREATE, options: CreateOptions.NON_DIRECTORY_FILE })
      const res = await notify
      expect(res.header.status).toBe(NtStatus.SUCCESS)
      expect(res.header.command).toBe(15)
      expect(res.raw.length).toBeGreaterThan(HEADER_SIZE)
      await other.setInfo(f.fileId, 13, Buffer.from([1]))
      await other.close(f.fileId)
      await client.setInfo(d.fileId, 13, Buffer.from([1]))
      await client.close(d.fileId)
    } finally {
      await other.disconnect()
      await client.disconnect()
    }
  })
})

/**
 * NTLMSSP with NTLMv2 responses only ([MS-NLMP]), as raw NTLMSSP tokens in SMB2 SESSION_SETUP.
 *
 * NTLMv1 (and LM) are never produced: they are broken, Samba refuses them by default
 * (`ntlm auth = ntlmv2-only`), and the npm SMB clients we tried fail precisely because they send them.
 * We do not negotiate NTLMSSP_NEGOTIATE_KEY_EXCH (it would need RC4, absent from OpenSSL 3's default
 * provider), so the exported session key is the NTLMv2 session base key. When the server's target
 * info carries a timestamp we add a MIC (HMAC-MD5 over the three messages) and say so in MsvAvFlags,
 * as [MS-NLMP] 3.1.5.1.2 requires.
 *
 * Tokens are sent without the SPNEGO wrapper: Samba (and Windows) accept raw NTLMSSP in SESSION_SETUP.
 */
import { createHmac, randomBytes } from 'node:crypto'
import { md4 } from './md4.js'

const SIGNATURE = Buffer.from('NTLMSSP\0', 'latin1')

const NEGOTIATE_UNICODE = 0x00000001
const REQUEST_TARGET = 0x00000004
const NEGOTIATE_NTLM = 0x00000200
const NEGOTIATE_ALWAYS_SIGN = 0x00008000
const NEGOTIATE_EXTENDED_SESSIONSECURITY = 0x00080000
const NEGOTIATE_TARGET_INFO = 0x00800000
const NEGOTIATE_VERSION = 0x02000000
const NEGOTIATE_128 = 0x20000000
const NEGOTIATE_56 = 0x80000000

const CLIENT_FLAGS =
  (NEGOTIATE_UNICODE | REQUEST_TARGET | NEGOTIATE_NTLM | NEGOTIATE_ALWAYS_SIGN | NEGOTIATE_EXTENDED_SESSIONSECURITY |
    NEGOTIATE_TARGET_INFO | NEGOTIATE_VERSION | NEGOTIATE_128 | NEGOTIATE_56) >>> 0

/** Windows 10 build 19041, NTLM revision 15: the version field servers expect to see. */
const VERSION = Buffer.from([10, 0, 0x61, 0x4a, 0, 0, 0, 15])

const AV_EOL = 0
const AV_FLAGS = 6
const AV_TIMESTAMP = 7

export class NtlmError extends Error {}

export function negotiateMessage(): Buffer {
  const b = Buffer.alloc(40)
  SIGNATURE.copy(b, 0)
  b.writeUInt32LE(1, 8)
  b.writeUInt32LE(CLIENT_FLAGS, 12)
  // domain and workstation fields empty (offset = end of message)
  b.writeUInt32LE(40, 20)
  b.writeUInt32LE(40, 28)
  VERSION.copy(b, 32)
  return b
}

interface Challenge {
  flags: number
  serverChallenge: Buffer
  targetInfo: Buffer
  raw: Buffer
}

export function parseChallenge(raw: Buffer): Challenge {
  if (raw.length < 48 || !raw.subarray(0, 8).equals(SIGNATURE) || raw.readUInt32LE(8) !== 2) {
    throw new NtlmError('the server answered SESSION_SETUP with something that is not an NTLMSSP CHALLENGE message')
  }
  const flags = raw.readUInt32LE(20)
  const serverChallenge = Buffer.from(raw.subarray(24, 32))
  const tiLen = raw.readUInt16LE(40)
  const tiOff = raw.readUInt32LE(44)
  if ((flags & NEGOTIATE_TARGET_INFO) === 0 || tiLen === 0 || tiOff + tiLen > raw.length) {
    throw new NtlmError('the server offered no NTLMv2 target info; NTLMv1 is refused by this client')
  }
  return { flags, serverChallenge, targetInfo: Buffer.from(raw.subarray(tiOff, tiOff + tiLen)), raw }
}

interface AvPair {
  id: number
  value: Buffer
}

function parseAvPairs(buf: Buffer): AvPair[] {
  const out: AvPair[] = []
  let off = 0
  while (off + 4 <= buf.length) {
    const id = buf.readUInt16LE(off)
    const len = buf.readUInt16LE(off + 2)
    if (id === AV_EOL) break
    out.push({ id, value: buf.subarray(off + 4, off + 4 + len) })
    off += 4 + len
  }
  return out
}

function encodeAvPairs(pairs: readonly AvPair[]): Buffer {
  const parts: Buffer[] = []
  for (const p of pairs) {
    const h = Buffer.alloc(4)
    h.writeUInt16LE(p.id, 0)
    h.writeUInt16LE(p.value.length, 2)
    parts.push(h, p.value)
  }
  parts.push(Buffer.alloc(4)) // MsvAvEOL
  return Buffer.concat(parts)
}

function hmacMd5(key: Buffer, ...data: Buffer[]): Buffer {
  const h = createHmac('md5', key)
  for (const d of data) h.update(d)
  return h.digest()
}

export interface Credentials {
  username: string
  password: string
  domain: string
}

interface Authenticate {
  message: Buffer
  /** the exported session key (16 bytes) SMB derives its signing key from */
  sessionKey: Buffer
}

/** NTOWFv2 ([MS-NLMP] 3.3.2): HMAC-MD5(MD4(UTF-16LE(password)), UTF-16LE(UPPER(user) + domain)). */
export function ntowfv2(creds: Credentials): Buffer {
  return hmacMd5(md4(Buffer.from(creds.password, 'utf16le')), Buffer.from(creds.username.toUpperCase() + creds.domain, 'utf16le'))
}

/** Builds the AUTHENTICATE message (NTLMv2) for a CHALLENGE; `negotiate` is the message we sent first. */
export function authenticateMessage(creds: Credentials, negotiate: Buffer, challenge: Challenge, workstation = 'BACKUP-PROXY'): Authenticate {
  const responseKey = ntowfv2(creds)
  const clientChallenge = randomBytes(8)

  const pairs = parseAvPairs(challenge.targetInfo)
  const serverTimestamp = pairs.find((p) => p.id === AV_TIMESTAMP)?.value
  const withMic = serverTimestamp !== undefined
  const timestamp = serverTimestamp !== undefined ? Buffer.from(serverTimestamp) : fileTimeNow()
  const newPairs = pairs.filter((p) => p.id !== AV_FLAGS)
  if (withMic) {
    const flagsPair = pairs.find((p) => p.id === AV_FLAGS)
    const f = Buffer.alloc(4)
    f.writeUInt32LE(((flagsPair?.value.readUInt32LE(0) ?? 0) | 0x2) >>> 0, 0)
    newPairs.push({ id: AV_FLAGS, value: f })
  }
  const temp = Buffer.concat([Buffer.from([1, 1, 0, 0, 0, 0, 0, 0]), timestamp, clientChallenge, Buffer.alloc(4), encodeAvPairs(newPairs), Buffer.alloc(4)])
  const ntProof = hmacMd5(responseKey, challenge.serverChallenge, temp)
  const ntResponse = Buffer.concat([ntProof, temp])
  const lmResponse = withMic ? Buffer.alloc(24) : Buffer.concat([hmacMd5(responseKey, challenge.serverChallenge, clientChallenge), clientChallenge])
  const sessionKey = hmacMd5(responseKey, ntProof)

  const domain = Buffer.from(creds.domain, 'utf16le')
  const user = Buffer.from(creds.username, 'utf16le')
  const ws = Buffer.from(workstation, 'utf16le')
  const headerLen = 88
  const payload = [lmResponse, ntResponse, domain, user, ws, Buffer.alloc(0)]
  const msg = Buffer.alloc(headerLen + payload.reduce((n, p) => n + p.length, 0))
  SIGNATURE.copy(msg, 0)
  msg.writeUInt32LE(3, 8)
  let off = headerLen
  payload.forEach((p, i) => {
    const field = 12 + i * 8
    msg.writeUInt16LE(p.length, field)
    msg.writeUInt16LE(p.length, field + 2)
    msg.writeUInt32LE(off, field + 4)
    p.copy(msg, off)
    off += p.length
  })
  const flags = (CLIENT_FLAGS & (challenge.flags | NEGOTIATE_VERSION)) >>> 0
  msg.writeUInt32LE(flags, 60)
  VERSION.copy(msg, 64)
  if (withMic) hmacMd5(sessionKey, negotiate, challenge.raw, msg).copy(msg, 72)
  return { message: msg, sessionKey }
}

/** Now as a Windows FILETIME (100 ns ticks since 1601), little endian. */
function fileTimeNow(): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE((BigInt(Date.now()) + 11_644_473_600_000n) * 10_000n)
  return b
}

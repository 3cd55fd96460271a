/**
 * Setting up an SMB session on a new connection, in the three steps [MS-SMB2] 3.2.4.2 prescribes:
 * NEGOTIATE (dialects 2.1..3.1.1 with the 3.1.1 preauth integrity and signing capability contexts; the
 * server's I/O sizes and whether it requires signing), SESSION_SETUP with NTLMv2 (the signing key; the
 * 3.1.1 preauth hash covers every message up to the last response), TREE_CONNECT to the share.
 * client.ts runs them once per connection; what each refuses (an unoffered dialect, a guest or anonymous
 * login, encryption, an unsigned final response) is an EACCES/E_REMOTE RemoteError naming the server.
 */
import { randomBytes } from 'node:crypto'
import { RemoteError } from '../../common/errors.js'
import type { SmbClientOptions } from './client.js'
import type { Response, SmbConnection } from './connection.js'
import { makeSigner, preauthUpdate, SIGNING_ALGORITHM_IDS, type SigningAlgorithm } from './crypto.js'
import { authenticateMessage, negotiateMessage, NtlmError, parseChallenge } from './ntlm.js'
import { NtStatus } from './status.js'
import { Capabilities, Command, Dialect, DIALECT_NAMES, HEADER_SIZE, SecurityMode, utf16 } from './wire.js'

type SetupOptions = Pick<SmbClientOptions, 'host' | 'port' | 'share' | 'maxDialect' | 'requireSigning' | 'ioSizeBytes' | 'username' | 'password' | 'domain'>

/** What NEGOTIATE settled. */
interface Negotiated {
  dialect: number
  /** 3.1.1: what the server chose in SIGNING_CAPABILITIES (AES-CMAC when it sent none) */
  signingAlgorithm: SigningAlgorithm
  maxReadBytes: number
  maxWriteBytes: number
  /** 3.1.1: the preauth integrity hash of the NEGOTIATE exchange */
  preauth: Buffer | undefined
}

const DIALECTS = [Dialect.SMB2_1, Dialect.SMB3_0, Dialect.SMB3_0_2, Dialect.SMB3_1_1]
const SESSION_FLAG_IS_GUEST = 0x1
const SESSION_FLAG_IS_NULL = 0x2
const SESSION_FLAG_ENCRYPT_DATA = 0x4
const SHARE_FLAG_ENCRYPT_DATA = 0x8000

export function parseDialect(version: string): number {
  const entry = Object.entries(DIALECT_NAMES).find(([, name]) => name === version)
  if (entry === undefined) throw new RemoteError('EINVAL', `unsupported SMB protocol version "${version}": use one of ${Object.values(DIALECT_NAMES).join(', ')}`)
  return Number(entry[0])
}

function serverOf(o: SetupOptions): string {
  return `${o.host}:${o.port}`
}

/** NEGOTIATE: the dialect, the I/O sizes and signing; with 3.1.1 the preauth hash so far. */
export async function negotiate(conn: SmbConnection, o: SetupOptions): Promise<Negotiated> {
  const server = serverOf(o)
  const maxDialect = parseDialect(o.maxDialect)
  const dialects = DIALECTS.filter((d) => d <= maxDialect)
  const with311 = dialects.includes(Dialect.SMB3_1_1)
  const dialectsEnd = 36 + dialects.length * 2
  // negotiate contexts start 8-aligned from the SMB2 header, and each one 8-aligned after the previous
  const contextOffset = Math.ceil((HEADER_SIZE + dialectsEnd) / 8) * 8
  const preauthContext = Buffer.alloc(48)
  preauthContext.writeUInt16LE(1, 0) // SMB2_PREAUTH_INTEGRITY_CAPABILITIES
  preauthContext.writeUInt16LE(38, 2)
  preauthContext.writeUInt16LE(1, 8) // one hash algorithm
  preauthContext.writeUInt16LE(32, 10) // salt length
  preauthContext.writeUInt16LE(1, 12) // SHA-512
  randomBytes(32).copy(preauthContext, 14)
  const offered: SigningAlgorithm[] = ['aes-gmac', 'aes-cmac']
  const signingContext = Buffer.alloc(8 + 2 + offered.length * 2)
  signingContext.writeUInt16LE(8, 0) // SMB2_SIGNING_CAPABILITIES
  signingContext.writeUInt16LE(2 + offered.length * 2, 2)
  signingContext.writeUInt16LE(offered.length, 8)
  offered.forEach((a, i) => signingContext.writeUInt16LE(SIGNING_ALGORITHM_IDS[a], 10 + i * 2))
  const contexts = Buffer.concat([preauthContext, signingContext])
  const body = Buffer.alloc(with311 ? contextOffset - HEADER_SIZE + contexts.length : dialectsEnd)
  body.writeUInt16LE(36, 0)
  body.writeUInt16LE(dialects.length, 2)
  body.writeUInt16LE(o.requireSigning ? SecurityMode.SIGNING_REQUIRED : SecurityMode.SIGNING_ENABLED, 4)
  body.writeUInt32LE(Capabilities.LARGE_MTU, 8)
  randomBytes(16).copy(body, 12) // ClientGuid
  if (with311) {
    body.writeUInt32LE(contextOffset, 28)
    body.writeUInt16LE(2, 32)
    contexts.copy(body, contextOffset - HEADER_SIZE)
  }
  dialects.forEach((d, i) => body.writeUInt16LE(d, 36 + i * 2))

  let sent: Buffer | undefined
  const res = await conn.request({ command: Command.NEGOTIATE, body, what: 'dialect negotiation', onSent: (m) => (sent = Buffer.from(m)) })
  const b = res.body
  const securityMode = b.readUInt16LE(2)
  const dialect = b.readUInt16LE(4)
  if (!dialects.includes(dialect as (typeof dialects)[number])) {
    throw new RemoteError('E_REMOTE', `SMB server ${server} chose dialect 0x${dialect.toString(16)}, which this client did not offer (it needs SMB 2.1 or later)`, { fields: { server } })
  }
  const capabilities = b.readUInt32LE(24)
  conn.multiCredit = (capabilities & Capabilities.LARGE_MTU) !== 0
  const cap = conn.multiCredit ? o.ioSizeBytes : 65536
  const sizes = { maxReadBytes: Math.min(b.readUInt32LE(32), cap), maxWriteBytes: Math.min(b.readUInt32LE(36), cap) }
  conn.signRequests = o.requireSigning || (securityMode & SecurityMode.SIGNING_REQUIRED) !== 0
  if (dialect !== Dialect.SMB3_1_1) return { dialect, signingAlgorithm: 'aes-cmac', ...sizes, preauth: undefined }
  if (sent === undefined) throw new Error('internal: negotiate request not captured')
  return { dialect, signingAlgorithm: signingAlgorithmOf(res), ...sizes, preauth: preauthUpdate(preauthUpdate(Buffer.alloc(64), sent), res.raw) }
}

/** SESSION_SETUP with NTLMv2 (two rounds); the connection signs from then on. Guests, anonymous and encrypted sessions are refused. */
export async function sessionSetup(conn: SmbConnection, o: SetupOptions, negotiated: Negotiated): Promise<void> {
  const server = serverOf(o)
  const { dialect } = negotiated
  let preauth = negotiated.preauth
  const who = `user "${o.domain === '' ? '' : `${o.domain}\\`}${o.username}"`
  const step = async (token: Buffer): Promise<Response> => {
    const body = Buffer.alloc(24 + token.length)
    body.writeUInt16LE(25, 0)
    body.writeUInt8(conn.signRequests ? SecurityMode.SIGNING_REQUIRED : SecurityMode.SIGNING_ENABLED, 3)
    body.writeUInt16LE(HEADER_SIZE + 24, 12)
    body.writeUInt16LE(token.length, 14)
    token.copy(body, 24)
    try {
      const res = await conn.request({
        command: Command.SESSION_SETUP,
        body,
        accept: [NtStatus.MORE_PROCESSING_REQUIRED],
        what: `for ${who}`,
        onSent: (m) => {
          if (preauth !== undefined) preauth = preauthUpdate(preauth, m)
        },
      })
      if (preauth !== undefined && res.header.status === NtStatus.MORE_PROCESSING_REQUIRED) preauth = preauthUpdate(preauth, res.raw)
      return res
    } catch (error) {
      if (error instanceof RemoteError && error.code === 'EACCES') {
        throw new RemoteError('EACCES', `SMB authentication of ${who} on ${server} failed (${typeof error.fields.detail === 'string' ? error.fields.detail : error.message}): check the user name, password and domain of the remote`, {
          cause: error,
          fields: { ...error.fields, username: o.username, domain: o.domain },
        })
      }
      throw error
    }
  }
  const negotiate = negotiateMessage()
  const first = await step(negotiate)
  if (first.header.status !== NtStatus.MORE_PROCESSING_REQUIRED) {
    throw new RemoteError('EACCES', `SMB server ${server} accepted ${who} without NTLM authentication (anonymous/guest): refused`, { fields: { server } })
  }
  conn.sessionId = first.header.sessionId
  let challenge
  try {
    challenge = parseChallenge(securityBuffer(first))
  } catch (error) {
    if (error instanceof NtlmError) throw new RemoteError('EACCES', `SMB authentication of ${who} on ${server}: ${error.message}`, { fields: { server } })
    throw error
  }
  const auth = authenticateMessage(o, negotiate, challenge)
  const final = await step(auth.message)
  const sessionFlags = final.body.readUInt16LE(2)
  if ((sessionFlags & (SESSION_FLAG_IS_GUEST | SESSION_FLAG_IS_NULL)) !== 0) {
    throw new RemoteError('EACCES', `SMB server ${server} logged ${who} in as guest: the password was not checked; refused (set "map to guest = never" or fix the account)`, { fields: { server } })
  }
  if ((sessionFlags & SESSION_FLAG_ENCRYPT_DATA) !== 0) {
    throw new RemoteError('EACCES', `SMB server ${server} requires encryption for ${who}, which this client does not implement`, { fields: { server } })
  }
  conn.signer = makeSigner(dialect, auth.sessionKey, preauth, negotiated.signingAlgorithm)
  const signed = (final.header.flags & 0x8) !== 0
  if (signed) conn.verify(final.raw)
  else if (dialect === Dialect.SMB3_1_1 || conn.signRequests) {
    throw new RemoteError('EACCES', `SMB server ${server} did not sign the final SESSION_SETUP response: refusing the session`, { fields: { server } })
  }
}

/** TREE_CONNECT to the share; its tree id. */
export async function treeConnect(conn: SmbConnection, o: SetupOptions, dialect: number): Promise<number> {
  const server = serverOf(o)
  const path = utf16(`\\\\${o.host}\\${o.share}`)
  const body = Buffer.alloc(8 + path.length)
  body.writeUInt16LE(9, 0)
  body.writeUInt16LE(HEADER_SIZE + 8, 4)
  body.writeUInt16LE(path.length, 6)
  path.copy(body, 8)
  let res: Response
  try {
    // [MS-SMB2] 3.2.4.1.1: with 3.1.1 the TREE_CONNECT of an authenticated session is always signed
    res = await conn.request({ command: Command.TREE_CONNECT, body, what: `of share "${o.share}"`, forceSign: dialect === Dialect.SMB3_1_1 })
  } catch (error) {
    if (error instanceof RemoteError && error.fields.ntStatus === NtStatus.BAD_NETWORK_NAME) {
      throw new RemoteError('ENOENT', `SMB share "${o.share}" does not exist on ${server}: check the share name in the remote URL`, { cause: error, fields: error.fields })
    }
    throw error
  }
  if ((res.body.readUInt32LE(4) & SHARE_FLAG_ENCRYPT_DATA) !== 0) {
    throw new RemoteError('EACCES', `SMB share "${o.share}" on ${server} requires encryption, which this client does not implement`, { fields: { server } })
  }
  return res.header.treeId
}

/** The signing algorithm in a 3.1.1 NEGOTIATE response's contexts (AES-CMAC when absent). */
function signingAlgorithmOf(res: Response): SigningAlgorithm {
  let count = res.body.readUInt16LE(6)
  let off = res.body.readUInt32LE(60)
  while (count-- > 0 && off + 8 <= res.raw.length) {
    const type = res.raw.readUInt16LE(off)
    const len = res.raw.readUInt16LE(off + 2)
    if (type === 8 && len >= 4) {
      const id = res.raw.readUInt16LE(off + 10)
      const found = (Object.entries(SIGNING_ALGORITHM_IDS) as [SigningAlgorithm, number][]).find(([, v]) => v === id)
      if (found === undefined) throw new RemoteError('E_REMOTE', `SMB server chose signing algorithm ${id}, which this client did not offer`)
      return found[0]
    }
    off = Math.ceil((off + 8 + len) / 8) * 8
  }
  return 'aes-cmac'
}

function securityBuffer(res: Response): Buffer {
  const off = res.body.readUInt16LE(4)
  const len = res.body.readUInt16LE(6)
  return res.raw.subarray(off, off + len)
}

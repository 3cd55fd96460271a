/**
 * SMB 2/3 message signing and key derivation, on node:crypto primitives.
 *
 * - SMB 2.1 signs with HMAC-SHA256(SessionKey) truncated to 16 bytes.
 * - SMB 3.0/3.0.2 sign with AES-128-CMAC keyed by KDF(SessionKey, "SMB2AESCMAC\0", "SmbSign\0").
 * - SMB 3.1.1 signs with AES-128-GMAC when both sides offer it in the SIGNING_CAPABILITIES negotiate
 *   context (else AES-128-CMAC), keyed by KDF(SessionKey, "SMBSigningKey\0", PreauthIntegrityHash), where
 *   the hash is SHA-512 chained over the NEGOTIATE and SESSION_SETUP exchange ([MS-SMB2] 3.2.5.3).
 *   GMAC is aes-128-gcm with the message as AAD and no plaintext: no output buffer, and GHASH is far
 *   cheaper than CBC, so signed 1 MiB WRITEs cost little CPU.
 * The KDF is SP800-108 in counter mode with HMAC-SHA256, r = 32, L = 128 ([MS-SMB2] 3.1.4.2).
 *
 * AES-CMAC (RFC 4493) is written here on top of aes-128-cbc/ecb because OpenSSL 3 exposes CMAC only
 * through EVP_MAC, which Node 20 does not surface. Messages arrive as several buffers (header, body,
 * payload) so nothing is concatenated to sign a 1 MiB WRITE.
 */
import { createCipheriv, createHash, createHmac } from 'node:crypto'

const ZERO16 = Buffer.alloc(16)

function aesBlock(key: Buffer, block: Buffer): Buffer {
  const c = createCipheriv('aes-128-ecb', key, null)
  c.setAutoPadding(false)
  return Buffer.concat([c.update(block), c.final()])
}

/** RFC 4493 subkey generation: doubling in GF(2^128). */
function double(block: Buffer): Buffer {
  const out = Buffer.alloc(16)
  let carry = 0
  for (let i = 15; i >= 0; i--) {
    const v = block[i] ?? 0
    out[i] = ((v << 1) | carry) & 0xff
    carry = v >> 7
  }
  if (((block[0] ?? 0) & 0x80) !== 0) out[15] = (out[15] ?? 0) ^ 0x87
  return out
}

/** A reusable AES-128-CMAC signer for one key (subkeys computed once). */
export class AesCmac {
  private readonly k1: Buffer
  private readonly k2: Buffer

  constructor(private readonly key: Buffer) {
    const l = aesBlock(key, ZERO16)
    this.k1 = double(l)
    this.k2 = double(this.k1)
  }

  /** CMAC of the concatenation of `parts`. */
  mac(parts: readonly Uint8Array[]): Buffer {
    let total = 0
    for (const p of parts) total += p.length
    const complete = total > 0 && total % 16 === 0
    // bytes before the last block go through CBC; the last block is xored with K1/K2 first
    const lastStart = total === 0 ? 0 : complete ? total - 16 : total - (total % 16)
    const last = Buffer.alloc(16)
    const cbc = createCipheriv('aes-128-cbc', this.key, ZERO16)
    cbc.setAutoPadding(false)
    let chain: Buffer = ZERO16
    let pos = 0
    for (const p of parts) {
      const end = pos + p.length
      if (pos < lastStart) {
        const take = Math.min(end, lastStart) - pos
        const out = cbc.update(p.subarray(0, take))
        if (out.length >= 16) chain = out.subarray(out.length - 16)
      }
      if (end > lastStart) {
        const from = Math.max(lastStart - pos, 0)
        last.set(p.subarray(from), pos + from - lastStart)
      }
      pos = end
    }
    cbc.final()
    if (!complete) last[total - lastStart] = 0x80
    const sub = complete ? this.k1 : this.k2
    for (let i = 0; i < 16; i++) last[i] = (last[i] ?? 0) ^ (sub[i] ?? 0) ^ (chain[i] ?? 0)
    return aesBlock(this.key, last)
  }
}

/** SP800-108 counter-mode KDF with HMAC-SHA256 as SMB 3 uses it; labels include their trailing NUL. */
export function smb3Kdf(key: Buffer, label: Buffer, context: Buffer): Buffer {
  const i = Buffer.from([0, 0, 0, 1])
  const l = Buffer.from([0, 0, 0, 128])
  return createHmac('sha256', key).update(i).update(label).update(Buffer.from([0])).update(context).update(l).digest().subarray(0, 16)
}

export type SigningAlgorithm = 'hmac-sha256' | 'aes-cmac' | 'aes-gmac'

/** SIGNING_CAPABILITIES algorithm ids ([MS-SMB2] 2.2.3.1.7). */
export const SIGNING_ALGORITHM_IDS: Record<SigningAlgorithm, number> = { 'hmac-sha256': 0, 'aes-cmac': 1, 'aes-gmac': 2 }

/**
 * GMAC nonce ([MS-SMB2] 3.1.4.1): MessageId (8 bytes LE), then a 32-bit word whose bit 0 says "server
 * to client" and bit 1 "CANCEL request". Both come from the header being signed.
 */
function gmacNonce(header: Uint8Array): Buffer {
  const h = Buffer.from(header.buffer, header.byteOffset, 64)
  const nonce = Buffer.alloc(12)
  h.copy(nonce, 0, 24, 32)
  const fromServer = (h.readUInt32LE(16) & 0x1) !== 0
  const cancel = h.readUInt16LE(12) === 12
  nonce.writeUInt32LE((fromServer ? 1 : 0) | (cancel ? 2 : 0), 8)
  return nonce
}

/** Signs and verifies messages of one session. */
export class Signer {
  private readonly cmac: AesCmac | undefined

  constructor(
    readonly algorithm: SigningAlgorithm,
    private readonly key: Buffer,
  ) {
    this.cmac = algorithm === 'aes-cmac' ? new AesCmac(key) : undefined
  }

  /** 16-byte signature over the message parts (parts[0] starts with the header, signature zeroed). */
  sign(parts: readonly Uint8Array[]): Buffer {
    if (this.cmac !== undefined) return this.cmac.mac(parts)
    if (this.algorithm === 'aes-gmac') {
      const first = parts[0]
      if (first === undefined || first.length < 64) throw new Error('internal: GMAC signing needs the SMB2 header first')
      const gcm = createCipheriv('aes-128-gcm', this.key, gmacNonce(first))
      for (const p of parts) gcm.setAAD(p)
      gcm.final()
      return gcm.getAuthTag()
    }
    const h = createHmac('sha256', this.key)
    for (const p of parts) h.update(p)
    return h.digest().subarray(0, 16)
  }
}

/**
 * Builds the session's signer from the dialect, session key, (3.1.1) preauth hash and (3.1.1) the
 * signing algorithm the server chose in its SIGNING_CAPABILITIES context (AES-CMAC when it sent none).
 */
export function makeSigner(dialect: number, sessionKey: Buffer, preauthHash: Buffer | undefined, algorithm311: SigningAlgorithm = 'aes-cmac'): Signer {
  if (dialect < 0x0300) return new Signer('hmac-sha256', sessionKey)
  if (dialect === 0x0311) {
    if (preauthHash === undefined) throw new Error('SMB 3.1.1 signing needs the preauth integrity hash')
    return new Signer(algorithm311, smb3Kdf(sessionKey, Buffer.from('SMBSigningKey\0', 'latin1'), preauthHash))
  }
  return new Signer('aes-cmac', smb3Kdf(sessionKey, Buffer.from('SMB2AESCMAC\0', 'latin1'), Buffer.from('SmbSign\0', 'latin1')))
}

/** SHA-512 chaining for the 3.1.1 preauth integrity hash: H' = SHA512(H || message). */
export function preauthUpdate(hash: Buffer, message: Buffer): Buffer {
  return createHash('sha512').update(hash).update(message).digest()
}

/**
 * On-remote format of client-side encrypted files, chunked so ranged reads stay possible:
 *
 *   header (16 B): "BPENC" 0x01 algorithm-id 0x00 | chunk size uint32 BE | 4 zero bytes
 *   chunk i:       nonce (12 B, random) | ciphertext (chunk size, last one shorter) | tag (16 B)
 *
 * Each chunk is AES-256-GCM or ChaCha20-Poly1305 with AAD = header | i (uint64 BE) | last-flag, so a
 * chunk cannot be moved, a file cannot be truncated at a chunk boundary or extended, and a wrong key
 * fails authentication (an error, never garbage). A file always has at least one chunk (an empty file
 * is one empty last chunk), so plain size = payload - chunks × 28 with chunks = ceil(payload / (C + 28)).
 * Random 96-bit nonces are safe for 2^32 chunks per key (4 PiB at 1 MiB chunks).
 *
 * Xen Orchestra encrypts whole files (and so forbids ranged reads on encrypted remotes); this format
 * keeps XO's per-remote model (encryption.json + metadata.json) but not its file format.
 */
import { createCipheriv, createDecipheriv, randomBytes, type CipherGCMTypes } from 'node:crypto'
import { BackupProxyError } from '../common/errors.js'

export type EncryptionAlgorithm = 'aes-256-gcm' | 'chacha20-poly1305'
export const ALGORITHMS: readonly EncryptionAlgorithm[] = ['aes-256-gcm', 'chacha20-poly1305']
const ALGO_ID: Record<EncryptionAlgorithm, number> = { 'aes-256-gcm': 1, 'chacha20-poly1305': 2 }

export const HEADER_BYTES = 16
export const NONCE_BYTES = 12
export const TAG_BYTES = 16
export const OVERHEAD_BYTES = NONCE_BYTES + TAG_BYTES
export const DEFAULT_CHUNK_BYTES = 1024 * 1024
const MAGIC = Buffer.from('BPENC\x01', 'latin1')

export function encryptionError(message: string, cause?: unknown): BackupProxyError {
  return new BackupProxyError('E_ENCRYPTION', message, cause === undefined ? {} : { cause })
}

/**
 * Turns the configured key into 32 bytes: 64 hex digits, or a 32-byte UTF-8 string (Xen Orchestra's
 * encryptionKey). Anything else is refused up front.
 */
export function parseEncryptionKey(key: string): Buffer {
  if (/^[0-9a-fA-F]{64}$/.test(key)) return Buffer.from(key, 'hex')
  const utf8 = Buffer.from(key, 'utf8')
  if (utf8.length === 32) return utf8
  throw encryptionError(`the encryption key must be 32 bytes: 32 characters (as Xen Orchestra) or 64 hex digits; the one given is ${utf8.length} bytes`)
}

export function makeHeader(algorithm: EncryptionAlgorithm, chunkBytes: number): Buffer {
  const h = Buffer.alloc(HEADER_BYTES)
  MAGIC.copy(h, 0)
  h[6] = ALGO_ID[algorithm]
  h.writeUInt32BE(chunkBytes, 8)
  return h
}

export function parseHeader(h: Buffer, path: string): { algorithm: EncryptionAlgorithm; chunkBytes: number } {
  if (h.length < HEADER_BYTES || !h.subarray(0, 6).equals(MAGIC)) throw encryptionError(`"${path}" is not an encrypted file of this remote (bad header): was it written without encryption?`)
  const algorithm = ALGORITHMS.find((a) => ALGO_ID[a] === h[6])
  const chunkBytes = h.readUInt32BE(8)
  if (algorithm === undefined || chunkBytes === 0) throw encryptionError(`"${path}" has an unknown encryption header (algorithm ${h[6]}, chunk ${chunkBytes})`)
  return { algorithm, chunkBytes }
}

/** Plain size of an encrypted file of `storedBytes` (header included). */
export function plainSize(storedBytes: number, chunkBytes: number, path: string): number {
  const payload = storedBytes - HEADER_BYTES
  if (payload < OVERHEAD_BYTES) throw encryptionError(`"${path}" is truncated (${storedBytes} bytes): it is not a complete encrypted file`)
  const chunks = Math.ceil(payload / (chunkBytes + OVERHEAD_BYTES))
  return payload - chunks * OVERHEAD_BYTES
}

/** Number of chunks of a file whose plain size is `size`. */
export function chunkCount(size: number, chunkBytes: number): number {
  return Math.max(1, Math.ceil(size / chunkBytes))
}

function aad(header: Buffer, index: number, last: boolean): Buffer {
  const a = Buffer.alloc(HEADER_BYTES + 9)
  header.copy(a, 0)
  a.writeBigUInt64BE(BigInt(index), HEADER_BYTES)
  a[HEADER_BYTES + 8] = last ? 1 : 0
  return a
}

export function encryptChunk(algorithm: EncryptionAlgorithm, key: Buffer, header: Buffer, index: number, last: boolean, plain: Buffer): Buffer {
  const nonce = randomBytes(NONCE_BYTES)
  const cipher = createCipheriv(algorithm as CipherGCMTypes, key, nonce, { authTagLength: TAG_BYTES })
  cipher.setAAD(aad(header, index, last))
  const out = Buffer.allocUnsafe(NONCE_BYTES + plain.length + TAG_BYTES)
  nonce.copy(out, 0)
  let o = NONCE_BYTES + cipher.update(plain).copy(out, NONCE_BYTES)
  o += cipher.final().copy(out, o)
  cipher.getAuthTag().copy(out, o)
  return out
}

export function decryptChunk(algorithm: EncryptionAlgorithm, key: Buffer, header: Buffer, index: number, last: boolean, sealed: Buffer, path: string): Buffer {
  if (sealed.length < OVERHEAD_BYTES) throw encryptionError(`"${path}" chunk ${index} is truncated`)
  const decipher = createDecipheriv(algorithm as CipherGCMTypes, key, sealed.subarray(0, NONCE_BYTES), { authTagLength: TAG_BYTES })
  decipher.setAAD(aad(header, index, last))
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES))
  const body = decipher.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES))
  try {
    decipher.final()
  } catch (error) {
    throw encryptionError(`"${path}" chunk ${index} failed authentication: wrong encryption key, or the file was modified or truncated`, error)
  }
  return body
}

/**
 * On-remote format of client-side encrypted files: Xen Orchestra's (@xen-orchestra/fs), byte for byte.
 * A file is encrypted whole, in one authenticated pass:
 *
 *   nonce (12 B, random) | ciphertext (same length as the plain data) | authentication tag (16 B)
 *
 * with ChaCha20-Poly1305 (what XO writes since 5.75) or AES-256-GCM (XO's older remotes; read, and
 * written only when asked), no associated data, and the key used as XO uses it: the UTF-8 bytes of a
 * 32-character string. The plain size is the stored size minus 28 bytes. There is no header: which
 * algorithm a remote uses is in its plain `encryption.json` (see encryption.ts).
 *
 * A whole-file tag means no ranged read is possible (the tag covers the whole file): XO refuses them on
 * encrypted remotes, and so do we (`E_ENCRYPTED_RANGE`). A wrong key or a modified file fails the tag:
 * an `E_ENCRYPTION` error, never garbage.
 *
 * The previous format of backup-proxy (chunked, read only) is in encryption-chunked.ts.
 */
import { createCipheriv, createDecipheriv, randomBytes, type CipherGCM, type CipherGCMTypes, type DecipherGCM } from 'node:crypto'
import { BackupProxyError } from '../common/errors.js'

export type EncryptionAlgorithm = 'aes-256-gcm' | 'chacha20-poly1305'
const ALGORITHMS: readonly EncryptionAlgorithm[] = ['chacha20-poly1305', 'aes-256-gcm']
/** what XO writes on a new encrypted remote */
export const DEFAULT_ALGORITHM: EncryptionAlgorithm = 'chacha20-poly1305'

export const NONCE_BYTES = 12
export const TAG_BYTES = 16
/** stored size - plain size of every file */
const OVERHEAD_BYTES = NONCE_BYTES + TAG_BYTES
const KEY_BYTES = 32

export function encryptionError(message: string, cause?: unknown): BackupProxyError {
  return new BackupProxyError('E_ENCRYPTION', message, cause === undefined ? {} : { cause })
}

export function isAlgorithm(value: unknown): value is EncryptionAlgorithm {
  return typeof value === 'string' && (ALGORITHMS as readonly string[]).includes(value)
}

/**
 * The key as Xen Orchestra uses it: the UTF-8 bytes of the configured string, which must be 32 bytes
 * (XO's form asks for 32 characters). Never echoes the key.
 */
export function xoKeyBytes(key: string): Buffer {
  const bytes = Buffer.from(key, 'utf8')
  if (bytes.length !== KEY_BYTES) {
    const hex = /^[0-9a-fA-F]{64}$/.test(key) ? ' (64 hex digits are accepted only to read remotes an earlier backup-proxy encrypted)' : ''
    throw encryptionError(`the encryption key must be 32 bytes, as Xen Orchestra's: 32 ASCII characters; the one given is ${bytes.length} bytes${hex}`)
  }
  return bytes
}

/** Checks the configured key has a usable form (XO's 32 bytes, or the 64 hex digits of old remotes). */
export function checkKeyForm(key: string): void {
  if (/^[0-9a-fA-F]{64}$/.test(key)) return
  xoKeyBytes(key)
}

/** Stored size of a file of `plainBytes`. */
export function sealedSize(plainBytes: number): number {
  return plainBytes + OVERHEAD_BYTES
}

/** Plain size of a stored file of `storedBytes`. */
export function plainSize(storedBytes: number, path: string): number {
  if (storedBytes < OVERHEAD_BYTES) throw encryptionError(`"${path}" is truncated (${storedBytes} bytes): it is not a complete encrypted file`)
  return storedBytes - OVERHEAD_BYTES
}

/** Both algorithms are AEADs with the same API; Node's types only name GCM's. */
export function createSealCipher(algorithm: EncryptionAlgorithm, key: Buffer): { nonce: Buffer; cipher: CipherGCM } {
  const nonce = randomBytes(NONCE_BYTES)
  return { nonce, cipher: createCipheriv(algorithm as CipherGCMTypes, key, nonce, { authTagLength: TAG_BYTES }) }
}

export function createOpenDecipher(algorithm: EncryptionAlgorithm, key: Buffer, nonce: Buffer): DecipherGCM {
  return createDecipheriv(algorithm as CipherGCMTypes, key, nonce, { authTagLength: TAG_BYTES })
}

export function authenticationError(path: string, cause: unknown): BackupProxyError {
  return encryptionError(`"${path}" failed authentication: wrong encryption key, or the file was modified or truncated`, cause)
}

/** Encrypts a whole buffer: nonce | ciphertext | tag. */
export function sealBuffer(algorithm: EncryptionAlgorithm, key: Buffer, plain: Uint8Array): Buffer {
  const { nonce, cipher } = createSealCipher(algorithm, key)
  const out = Buffer.allocUnsafe(sealedSize(plain.length))
  nonce.copy(out, 0)
  let o = NONCE_BYTES + cipher.update(plain).copy(out, NONCE_BYTES)
  o += cipher.final().copy(out, o)
  cipher.getAuthTag().copy(out, o)
  return out
}

/** Decrypts and authenticates a whole stored file. */
export function openBuffer(algorithm: EncryptionAlgorithm, key: Buffer, sealed: Buffer, path: string): Buffer {
  plainSize(sealed.length, path)
  const decipher = createOpenDecipher(algorithm, key, sealed.subarray(0, NONCE_BYTES))
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES))
  const body = decipher.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES))
  try {
    decipher.final()
  } catch (error) {
    throw authenticationError(path, error)
  }
  return body
}

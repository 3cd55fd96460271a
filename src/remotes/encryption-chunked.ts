/**
 * Reader of the format earlier versions of backup-proxy encrypted remotes with (their `encryption.json`
 * says `"format": "backup-proxy-chunked-1"`). Xen Orchestra cannot read it, so it is no longer
 * written: such remotes are read (restore, verify, list) and can be emptied, nothing more.
 *
 *   header (16 B): "BPENC" 0x01 algorithm-id 0x00 | chunk size uint32 BE | 4 zero bytes
 *   chunk i:       nonce (12 B, random) | ciphertext (chunk size, last one shorter) | tag (16 B)
 *
 * Each chunk is AES-256-GCM (id 1) or ChaCha20-Poly1305 (id 2) with AAD = header | i (uint64 BE) |
 * last-flag. A file always has at least one chunk, so plain size = payload - chunks × 28 with
 * chunks = ceil(payload / (C + 28)). The key is 64 hex digits or a 32-byte UTF-8 string. Chunks make
 * ranged reads possible: only the chunks a range touches are read and decrypted.
 */
import { Transform, type TransformCallback } from 'node:stream'
import { createDecipheriv, type CipherGCMTypes } from 'node:crypto'
import { encryptionError, xoKeyBytes, type EncryptionAlgorithm } from './encryption-format.js'

export const CHUNKED_FORMAT = 'backup-proxy-chunked-1'
export const HEADER_BYTES = 16
const NONCE_BYTES = 12
const TAG_BYTES = 16
export const CHUNK_OVERHEAD_BYTES = NONCE_BYTES + TAG_BYTES
const MAGIC = Buffer.from('BPENC\x01', 'latin1')
const ALGO_ID: Record<EncryptionAlgorithm, number> = { 'aes-256-gcm': 1, 'chacha20-poly1305': 2 }

export interface ChunkedParams {
  algorithm: EncryptionAlgorithm
  key: Buffer
  header: Buffer
  chunkBytes: number
}

/** The key of an old remote: 64 hex digits, or a 32-byte UTF-8 string. */
export function chunkedKeyBytes(key: string): Buffer {
  return /^[0-9a-fA-F]{64}$/.test(key) ? Buffer.from(key, 'hex') : xoKeyBytes(key)
}

export function chunkedHeader(algorithm: EncryptionAlgorithm, chunkBytes: number): Buffer {
  const h = Buffer.alloc(HEADER_BYTES)
  MAGIC.copy(h, 0)
  h[6] = ALGO_ID[algorithm]
  h.writeUInt32BE(chunkBytes, 8)
  return h
}

/** Checks a file's header is the one the remote's encryption.json describes. */
export function checkChunkedHeader(head: Buffer, p: ChunkedParams, path: string): void {
  if (head.length < HEADER_BYTES || !head.subarray(0, 6).equals(MAGIC)) throw encryptionError(`"${path}" is not an encrypted file of this remote (bad header): was it written without encryption?`)
  if (!head.equals(p.header)) throw encryptionError(`"${path}" was encrypted with other settings than encryption.json says`)
}

/** Plain size of a stored file of `storedBytes` (header included). */
export function chunkedPlainSize(storedBytes: number, chunkBytes: number, path: string): number {
  const payload = storedBytes - HEADER_BYTES
  if (payload < CHUNK_OVERHEAD_BYTES) throw encryptionError(`"${path}" is truncated (${storedBytes} bytes): it is not a complete encrypted file`)
  const chunks = Math.ceil(payload / (chunkBytes + CHUNK_OVERHEAD_BYTES))
  return payload - chunks * CHUNK_OVERHEAD_BYTES
}

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

function decryptChunk(p: ChunkedParams, index: number, last: boolean, sealed: Buffer, path: string): Buffer {
  if (sealed.length < CHUNK_OVERHEAD_BYTES) throw encryptionError(`"${path}" chunk ${index} is truncated`)
  const decipher = createDecipheriv(p.algorithm as CipherGCMTypes, p.key, sealed.subarray(0, NONCE_BYTES), { authTagLength: TAG_BYTES })
  decipher.setAAD(aad(p.header, index, last))
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES))
  const body = decipher.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES))
  try {
    decipher.final()
  } catch (error) {
    throw encryptionError(`"${path}" chunk ${index} failed authentication: wrong encryption key, or the file was modified or truncated`, error)
  }
  return body
}

/**
 * Decrypts sealed chunks [first, ...] of a file with `totalChunks` chunks, and keeps plain bytes
 * [skip, skip + length) of the decrypted run.
 */
export class ChunkedDecryptingTransform extends Transform {
  readonly #p: ChunkedParams
  readonly #path: string
  readonly #totalChunks: number
  readonly #sealedBytes: number
  #index: number
  #skip: number
  #left: number
  #buf: Buffer[] = []
  #bufBytes = 0

  constructor(params: ChunkedParams, path: string, firstChunk: number, totalChunks: number, skip: number, length: number) {
    super({ readableHighWaterMark: params.chunkBytes })
    this.#p = params
    this.#path = path
    this.#index = firstChunk
    this.#totalChunks = totalChunks
    this.#sealedBytes = params.chunkBytes + CHUNK_OVERHEAD_BYTES
    this.#skip = skip
    this.#left = length
  }

  #emit(sealed: Buffer): void {
    const last = this.#index === this.#totalChunks - 1
    let plain = decryptChunk(this.#p, this.#index++, last, sealed, this.#path)
    if (this.#skip > 0) {
      const s = Math.min(this.#skip, plain.length)
      plain = plain.subarray(s)
      this.#skip -= s
    }
    if (plain.length > this.#left) plain = plain.subarray(0, this.#left)
    this.#left -= plain.length
    if (plain.length > 0) this.push(plain)
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.#buf.push(chunk)
      this.#bufBytes += chunk.length
      while (this.#bufBytes >= this.#sealedBytes) {
        const all = this.#buf.length === 1 ? (this.#buf[0] as Buffer) : Buffer.concat(this.#buf, this.#bufBytes)
        this.#emit(all.subarray(0, this.#sealedBytes))
        const rest = all.subarray(this.#sealedBytes)
        this.#buf = rest.length > 0 ? [rest] : []
        this.#bufBytes = rest.length
      }
      callback()
    } catch (error) {
      callback(error as Error)
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      if (this.#bufBytes > 0) this.#emit(Buffer.concat(this.#buf, this.#bufBytes))
      if (this.#left > 0) throw encryptionError(`"${this.#path}" ended ${this.#left} bytes early: the encrypted file is truncated`)
      callback()
    } catch (error) {
      callback(error as Error)
    }
  }
}

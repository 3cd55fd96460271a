/**
 * Sealing secrets at rest: the secret fields of a task (XAPI credentials, remote URLs that embed
 * passwords, remote encryption keys — see SECRET_PATHS) are replaced by `bpseal1.<iv>.<tag>.<data>`
 * strings before the task goes to Redis, and opened again by the proxy right before a processor runs.
 *
 * AES-256-GCM (node:crypto) with a 32-byte key shared by the orchestrator and the proxies
 * (config security.sealKey / sealKeyFile); a fresh 96-bit IV per value; the field's path
 * (`xapis.main.credentials`) is the additional authenticated data, so a sealed value cannot be moved to
 * another field. The plaintext is the JSON of the value, so objects and strings seal the same way.
 *
 * Both sides remember their last results for a while (SEAL_MEMO_SIZE values, SEAL_MEMO_TTL_MS): an
 * orchestrator enqueues job after job with the same credentials and remote URLs, and a proxy opens the
 * same sealed values again and again. The AES-GCM work and its native objects (created and collected
 * per value) were the largest per-job cost of a short job. So within that window the same secret in the
 * same field seals to the same string (a sealed value still reveals nothing but that it equals another
 * one, which the clear remote and XAPI ids in the task already tell), and a proxy opens a sealed value
 * it opened before without decrypting it again (only successfully opened values are remembered, under
 * their field path: a moved value is still refused).
 */
import { createCipheriv, createDecipheriv, randomBytes, randomFillSync } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { BackupProxyError, ConfigInvalidError, TaskInvalidError, type JsonValue } from '../common/errors.js'
import type { Config } from '../config/index.js'

const PREFIX = 'bpseal1.'
const IV_BYTES = 12

/**
 * IVs are cut from a block of CSPRNG output drawn 4 KiB at a time: a randomBytes(12) call per value
 * cost more than the AES-GCM work itself. Each IV is still fresh random bytes, used once (copied out,
 * the block is overwritten only after all of it was handed out).
 */
const IV_BLOCK = Buffer.alloc(IV_BYTES * 341)
let ivOffset = IV_BLOCK.length

function freshIv(): Buffer {
  if (ivOffset + IV_BYTES > IV_BLOCK.length) {
    randomFillSync(IV_BLOCK)
    ivOffset = 0
  }
  const iv = Buffer.from(IV_BLOCK.subarray(ivOffset, ivOffset + IV_BYTES))
  ivOffset += IV_BYTES
  return iv
}

/** Values remembered per direction, and for how long (see the header). */
const SEAL_MEMO_SIZE = 256
const SEAL_MEMO_TTL_MS = 10 * 60_000

/** A small map whose entries expire; the oldest goes when it is full. */
class Memo {
  readonly #entries = new Map<string, { value: string; at: number }>()

  get(key: string, now: number): string | undefined {
    const e = this.#entries.get(key)
    if (e === undefined) return undefined
    if (now - e.at > SEAL_MEMO_TTL_MS) {
      this.#entries.delete(key)
      return undefined
    }
    return e.value
  }

  set(key: string, value: string, now: number): void {
    if (this.#entries.size >= SEAL_MEMO_SIZE) {
      const oldest = this.#entries.keys().next()
      if (oldest.done !== true) this.#entries.delete(oldest.value)
    }
    this.#entries.set(key, { value, at: now })
  }
}

/** AAD bytes per field path (a handful of distinct paths, encoded once). */
const aadBytes = new Map<string, Buffer>()

function aadOf(path: string): Buffer {
  let b = aadBytes.get(path)
  if (b === undefined) {
    b = Buffer.from(path)
    if (aadBytes.size < 1000) aadBytes.set(path, b)
  }
  return b
}

export class SealKey {
  readonly #key: Buffer
  /** `<aad>\n<clear JSON>` → sealed, and `<aad>\n<sealed>` → clear JSON */
  readonly #sealed = new Memo()
  readonly #opened = new Memo()

  constructor(key: Buffer) {
    if (key.length !== 32) throw new ConfigInvalidError([{ path: 'security.sealKey', message: `must be 32 bytes (base64 or hex), got ${key.length} bytes` }])
    this.#key = Buffer.from(key)
  }

  /** Parses a key written as 64 hex digits or base64 of 32 bytes. */
  static fromString(text: string, path = 'security.sealKey'): SealKey {
    const t = text.trim()
    const buf = /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, 'hex') : Buffer.from(t, 'base64')
    if (buf.length !== 32) {
      throw new ConfigInvalidError([{ path, message: `must be 32 random bytes written as base64 or 64 hex digits (generate one with: openssl rand -base64 32), got ${buf.length} bytes` }])
    }
    return new SealKey(buf)
  }

  static generate(): SealKey {
    return new SealKey(randomBytes(32))
  }

  /** base64 form, for writing a generated key to a file. */
  export(): string {
    return this.#key.toString('base64')
  }

  seal(value: JsonValue, aad: string): string {
    const clear = JSON.stringify(value)
    const memoKey = `${aad}\n${clear}`
    const now = Date.now()
    const known = this.#sealed.get(memoKey, now)
    if (known !== undefined) return known
    const iv = freshIv()
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv)
    cipher.setAAD(aadOf(aad))
    const data = Buffer.concat([cipher.update(clear, 'utf8'), cipher.final()])
    const sealed = `${PREFIX}${iv.toString('base64url')}.${cipher.getAuthTag().toString('base64url')}.${data.toString('base64url')}`
    this.#sealed.set(memoKey, sealed, now)
    return sealed
  }

  unseal(sealed: string, aad: string): JsonValue {
    const memoKey = `${aad}\n${sealed}`
    const now = Date.now()
    const known = this.#opened.get(memoKey, now)
    if (known !== undefined) return JSON.parse(known) as JsonValue
    const { clear, value } = this.#open(sealed, aad)
    this.#opened.set(memoKey, clear, now)
    return value
  }

  #open(sealed: string, aad: string): { clear: string; value: JsonValue } {
    const parts = sealed.startsWith(PREFIX) ? sealed.slice(PREFIX.length).split('.') : []
    if (parts.length !== 3) throw new TaskInvalidError(`${aad}: is not a sealed value (bpseal1.*); tasks must be enqueued through the EnqueueClient`, { fields: { field: aad } })
    const [iv, tag, data] = parts.map((p) => Buffer.from(p, 'base64url')) as [Buffer, Buffer, Buffer]
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#key, iv)
      decipher.setAAD(aadOf(aad))
      decipher.setAuthTag(tag)
      const clear = Buffer.concat([decipher.update(data), decipher.final()]).toString('utf8')
      return { clear, value: JSON.parse(clear) as JsonValue }
    } catch (error) {
      throw new BackupProxyError('E_ENCRYPTION', `${aad}: cannot open the sealed value: the orchestrator and this proxy must share the same security.sealKey`, {
        cause: error,
        fields: { field: aad },
      })
    }
  }
}

export function isSealed(value: unknown): value is string {
  return typeof value === 'string' && value.startsWith(PREFIX)
}

/** Loads the seal key from config: sealKeyFile wins over sealKey. Throws a ConfigInvalidError saying what to set. */
export async function loadSealKey(config: Pick<Config, 'security'>): Promise<SealKey> {
  const { sealKey, sealKeyFile } = config.security
  if (sealKeyFile !== undefined) {
    let text: string
    try {
      text = await readFile(sealKeyFile, 'utf8')
    } catch (error) {
      throw new ConfigInvalidError([{ path: 'security.sealKeyFile', message: `cannot read ${sealKeyFile}: ${(error as Error).message}` }], { cause: error })
    }
    return SealKey.fromString(text, 'security.sealKeyFile')
  }
  if (sealKey !== undefined) return SealKey.fromString(sealKey)
  throw new ConfigInvalidError([
    {
      path: 'security.sealKeyFile',
      message: 'no seal key: credentials are sealed in queued jobs; set security.sealKeyFile (or BACKUP_PROXY_SECURITY_SEAL_KEY) to 32 random bytes in base64 (openssl rand -base64 32), the same on the orchestrator and every proxy',
    },
  ])
}

type Walkable = Record<string, unknown>

/** Split forms of the SECRET_PATHS strings (a handful, split once instead of on every job). */
const splitPaths = new Map<string, readonly string[]>()

function segmentsOf(path: string): readonly string[] {
  let segments = splitPaths.get(path)
  if (segments === undefined) {
    segments = path.split('.')
    if (splitPaths.size < 1000) splitPaths.set(path, segments)
  }
  return segments
}

type AtPath = (key: SealKey, value: unknown, concretePath: string) => unknown

const sealAt: AtPath = (key, value, at) => key.seal(value as JsonValue, at)
const unsealAt: AtPath = (key, value, at) => key.unseal(typeof value === 'string' ? value : '', at)

function visitAtPath(node: unknown, segments: readonly string[], i: number, trail: string, fn: AtPath, sealKey: SealKey): void {
  if (typeof node !== 'object' || node === null || Array.isArray(node)) return
  const seg = segments[i]!
  if (seg !== '*') return visitKey(node as Walkable, seg, segments, i, trail, fn, sealKey)
  for (const key of Object.keys(node)) visitKey(node as Walkable, key, segments, i, trail, fn, sealKey)
}

function visitKey(obj: Walkable, key: string, segments: readonly string[], i: number, trail: string, fn: AtPath, sealKey: SealKey): void {
  if (!Object.hasOwn(obj, key) || obj[key] === undefined) return
  const at = trail === '' ? key : `${trail}.${key}`
  if (i === segments.length - 1) obj[key] = fn(sealKey, obj[key], at)
  else visitAtPath(obj[key], segments, i + 1, at, fn, sealKey)
}

/** Applies `fn` to every value found at `path` (dot-separated, `*` = any key) inside `root`, in place. */
function mapAtPath(root: Walkable, path: string, fn: AtPath, sealKey: SealKey): void {
  visitAtPath(root, segmentsOf(path), 0, '', fn, sealKey)
}

/**
 * Returns `task` with the values at `paths` sealed: a deep copy, or `task` itself changed in place with
 * `inPlace` (the client seals the fresh object parseTask returned; copying it again costs per job).
 */
export function sealFields<T extends object>(task: T, paths: readonly string[], key: SealKey, options: { inPlace?: boolean } = {}): T {
  const target = (options.inPlace === true ? task : structuredClone(task)) as unknown as Walkable
  for (const path of paths) mapAtPath(target, path, sealAt, key)
  return target as unknown as T
}

/** Returns `sealed` with the values at `paths` opened (deep copy unless `inPlace`); a value that is not sealed is refused. */
export function unsealFields(sealed: unknown, paths: readonly string[], key: SealKey, options: { inPlace?: boolean } = {}): unknown {
  if (typeof sealed !== 'object' || sealed === null) return sealed
  const target = (options.inPlace === true ? sealed : structuredClone(sealed)) as Walkable
  for (const path of paths) mapAtPath(target, path, unsealAt, key)
  return target
}

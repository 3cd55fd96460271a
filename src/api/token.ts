/**
 * The API token: made by `backup-proxy api token`, handed once to the Xen Orchestra admin (who registers
 * the proxy with it), and stored by the proxy only as a hash (`api.tokenHash` / `api.tokenHashFile`).
 *
 * Why scrypt and not a salted SHA-256: a token we generate has 256 random bits and a fast hash would do,
 * but an admin may also register a token of their own choosing (XO lets them type one, and
 * `api token --stdin` hashes it), and the hash lives in a configuration file that is copied around,
 * backed up and read by people. scrypt (memory-hard, per-hash salt) keeps an offline guess of a weak
 * token expensive. Its cost per check (tens of milliseconds) is paid once per token and process:
 * a verified token is remembered in memory by its SHA-256 digest (never the token itself), so XO's calls
 * do not each pay it. A wrong token always pays it, which is part of the slowdown of bad tokens.
 *
 * Format: `scrypt$<N>$<r>$<p>$<salt, base64url>$<hash, base64url>`.
 */
import { createHash, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto'
import { ConfigInvalidError } from '../common/errors.js'

const N = 16384
const R = 8
const P = 1
const KEY_BYTES = 32
const SALT_BYTES = 16
const HASH_RE = /^scrypt\$(\d{1,7})\$(\d{1,3})\$(\d{1,3})\$([A-Za-z0-9_-]{16,})\$([A-Za-z0-9_-]{32,})$/

function scryptAsync(secret: string, salt: Buffer, keyBytes: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(secret, salt, keyBytes, options, (error, key) => (error === null ? resolve(key) : reject(error)))
  })
}

/** A new token: 32 random bytes, base64url (43 characters, safe in a cookie and a URL). */
export function generateToken(): string {
  return randomBytes(32).toString('base64url')
}

/** The storable hash of a token. */
export async function hashToken(token: string): Promise<string> {
  if (token.length === 0) throw new RangeError('the token is empty')
  const salt = randomBytes(SALT_BYTES)
  const key = await scryptAsync(token, salt, KEY_BYTES, { N, r: R, p: P, maxmem: 64 * 1024 * 1024 })
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64url')}$${key.toString('base64url')}`
}

interface ParsedHash {
  n: number
  r: number
  p: number
  salt: Buffer
  key: Buffer
}

/** Parses a stored hash; the error names `where` (the config key) and never echoes the value. */
export function parseTokenHash(text: string, where = 'api.tokenHash'): ParsedHash {
  const m = HASH_RE.exec(text.trim())
  const n = Number(m?.[1])
  if (m === null || !Number.isInteger(Math.log2(n)) || n < 1024 || n > 1_048_576) {
    throw new ConfigInvalidError([{ path: where, message: 'not a token hash made by `backup-proxy api token` (scrypt$N$r$p$salt$hash)' }])
  }
  return { n, r: Number(m[2]), p: Number(m[3]), salt: Buffer.from(m[4]!, 'base64url'), key: Buffer.from(m[5]!, 'base64url') }
}

/** Checks presented tokens against one stored hash. */
export class TokenVerifier {
  readonly #hash: ParsedHash
  /** SHA-256 digests of tokens that matched (in memory only; a digest of a 256-bit token reveals nothing useful) */
  readonly #known = new Set<string>()

  constructor(storedHash: string, where?: string) {
    this.#hash = parseTokenHash(storedHash, where)
  }

  async verify(token: string | undefined): Promise<boolean> {
    if (token === undefined || token.length === 0 || token.length > 1024) return false
    const digest = createHash('sha256').update(token).digest('base64url')
    if (this.#known.has(digest)) return true
    const { n, r, p, salt, key } = this.#hash
    const candidate = await scryptAsync(token, salt, key.length, { N: n, r, p, maxmem: 256 * n * r + 1024 * 1024 })
    const ok = candidate.length === key.length && timingSafeEqual(candidate, key)
    if (ok) this.#known.add(digest)
    return ok
  }
}

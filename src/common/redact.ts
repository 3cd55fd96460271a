/**
 * Secret redaction shared by the logger, error messages and anything that prints settings.
 *
 * Redaction is by key (any depth): a key that names a secret has its value replaced by `***`. Strings
 * that embed credentials in a URL's userinfo (`s3://AK:SK@host/...`, `smb://user:pw@...`) keep the user
 * but lose the password. This runs on every log line, so it is a single walk with no allocation when
 * nothing matches.
 */

export const REDACTED = '***'

/** Keys whose values are secrets, matched case-insensitively on the whole key or as a suffix. */
const SECRET_KEY_RE = /(?:^|[-_.]|(?<=[a-z]))(?:password|passwd|pass|secret|secretaccesskey|credentials|sk|token|apikey|authorization|sealkey|encryptionkey|key)$/i
/** Keys that end in `key` but are not secrets. */
const NOT_SECRET_KEY_RE = /^(?:key|keyprefix|accesskeyid|ak|jobkey|cachekey|queuekey|lockkey|partitionkey|hashkey|sortkey|idempotencykey)$/i

function isSecretKey(key: string): boolean {
  if (NOT_SECRET_KEY_RE.test(key)) return false
  return SECRET_KEY_RE.test(key)
}

// scheme://user:password@  (password may contain anything but '@' and '/')
const URL_USERINFO_RE = /\b([a-z][a-z0-9+.-]*:\/\/)([^:@/\s]*):([^@/\s]*)@/gi

/** Replaces the password of every URL embedded in a string. */
export function redactString(value: string): string {
  if (!value.includes('://')) return value
  return value.replace(URL_USERINFO_RE, (_m, scheme: string, user: string) => `${scheme}${user}:${REDACTED}@`)
}

/** Deep copy of `value` with secrets redacted; returns the same object when nothing needed redaction. */
export function redact<T>(value: T, seen = new WeakSet<object>()): T {
  if (typeof value === 'string') return redactString(value) as T
  if (typeof value !== 'object' || value === null) return value
  if (seen.has(value)) return value
  seen.add(value)
  if (value instanceof Error) return value
  if (Buffer.isBuffer(value) || ArrayBuffer.isView(value)) return value
  if (Array.isArray(value)) {
    let changed = false
    const out = value.map((v: unknown) => {
      const r = redact(v, seen)
      if (r !== v) changed = true
      return r
    })
    return (changed ? out : value) as T
  }
  let out: Record<string, unknown> | undefined
  for (const [k, v] of Object.entries(value)) {
    let r: unknown
    if (isSecretKey(k) && v !== undefined && v !== null && v !== '') r = REDACTED
    else r = redact(v, seen)
    if (r !== v) {
      out ??= { ...(value as Record<string, unknown>) }
      out[k] = r
    }
  }
  return (out ?? value) as T
}

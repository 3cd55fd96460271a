/**
 * Secrets on the command line without putting them in argv (where `ps` and shell history show them):
 * the XAPI password and a remote's password / S3 secret key come from a file (`--xapi-password-file`,
 * `--remote-password-file`) or the environment (BACKUP_PROXY_XAPI_PASSWORD, BACKUP_PROXY_REMOTE_PASSWORD);
 * the file wins over the environment, which wins over a password written in the URL (still accepted,
 * for compatibility, but never required). A secret is never printed, not even in an error.
 */
import { readFile } from 'node:fs/promises'
import { UsageError } from '../common/errors.js'
import { redactString } from '../common/redact.js'
import { formatRemoteUrl, parseRemoteUrl } from '../remotes/url.js'

export const XAPI_PASSWORD_ENV = 'BACKUP_PROXY_XAPI_PASSWORD'
export const REMOTE_PASSWORD_ENV = 'BACKUP_PROXY_REMOTE_PASSWORD'

/** The help of `--remote-password-file`, the same on every command that opens a remote. */
export const REMOTE_PASSWORD_FILE_HELP = `file holding the remote's password or S3 secret key, for a URL without it (or env ${REMOTE_PASSWORD_ENV})`

/** A secret from a file (content, one trailing newline dropped) or else an environment variable. */
async function readSecret(option: string, file: string | undefined, envName: string, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  if (file !== undefined) {
    let text: string
    try {
      text = await readFile(file, 'utf8')
    } catch (error) {
      throw new UsageError(`${option}: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`, { cause: error })
    }
    const secret = text.replace(/\r?\n$/, '')
    if (secret === '') throw new UsageError(`${option}: ${file} is empty`)
    return secret
  }
  const value = env[envName]
  return value === undefined || value === '' ? undefined : value
}

interface XapiTarget {
  /** the URL without credentials, no trailing slash */
  url: string
  username: string
  password: string
}

/**
 * The pool's URL and credentials: `https://user@host` (or `--xapi-user`) plus the password from
 * `--xapi-password-file` or BACKUP_PROXY_XAPI_PASSWORD (a password in the URL still works).
 */
export async function xapiTarget(urlText: string, flags: { xapiUser?: string; xapiPasswordFile?: string }, env: NodeJS.ProcessEnv = process.env): Promise<XapiTarget> {
  let url: URL
  try {
    url = new URL(urlText)
  } catch (error) {
    throw new UsageError(`--xapi: not a URL: ${redactString(urlText)}`, { cause: error })
  }
  const username = flags.xapiUser ?? decodeURIComponent(url.username)
  const password = (await readSecret('--xapi-password-file', flags.xapiPasswordFile, XAPI_PASSWORD_ENV, env)) ?? decodeURIComponent(url.password)
  if (username === '') throw new UsageError('--xapi: no user: give https://user@host (or --xapi-user <name>)')
  if (password === '') throw new UsageError(`--xapi: no password for ${username}: put it in a file (--xapi-password-file <path>) or in the environment (${XAPI_PASSWORD_ENV})`)
  url.username = ''
  url.password = ''
  return { url: url.toString().replace(/\/$/, ''), username, password }
}

/**
 * A remote URL with its password (SMB) or secret key (S3) filled in from `--remote-password-file` or
 * BACKUP_PROXY_REMOTE_PASSWORD, when the URL names a user without one (`s3://AK@host/bucket`,
 * `smb://user@domain\\host\share`). URLs that carry their password, or need none, are returned as given.
 */
export async function remoteUrlWithSecret(url: string, flags: { remotePasswordFile?: string }, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const secret = await readSecret('--remote-password-file', flags.remotePasswordFile, REMOTE_PASSWORD_ENV, env)
  if (secret === undefined) return url
  const scheme = url.slice(0, Math.max(0, url.indexOf('://')))
  if (scheme === 's3' || scheme === 's3+http') {
    // s3://AK@host/... → s3://AK:<secret>@host/...
    const m = /^(s3(?:\+http)?:\/\/)([^:@/]+)@(.*)$/s.exec(url)
    if (m === null) return url
    return formatRemoteUrl(parseRemoteUrl(`${m[1]}${m[2]}:${encodeURIComponent(secret)}@${m[3]}`))
  }
  if (scheme === 'smb') {
    const m = /^smb:\/\/([^:@]+)@(.*)$/s.exec(url)
    if (m === null) return url
    return `smb://${m[1]}:${secret}@${m[2]}`
  }
  return url
}

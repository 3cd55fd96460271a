/**
 * Xen Orchestra remote URLs: parse, format, redact.
 *
 * The formats are XO's (packages/xo-remote-parser), so a URL copied from XO works here and back:
 *   file:///abs/path
 *   nfs://host[:port]:/export/path
 *   smb://user:password@domain\\host\share\0sub\dir        (\0 is a NUL character, the subdir is `\`-separated)
 *   s3://AK:SK@host[:port]/bucket/dir[?options][#region]    (s3+http:// for plain HTTP)
 * Options ride in the query string, each value JSON-encoded as XO does (`?useVhdDirectory=true`).
 * S3 credentials are URL-encoded (`test%3Atester`); XO does not encode SMB credentials (its regexp takes
 * the password greedily up to the last `@`), so neither do we — a URL from XO must mean the same here.
 * `?region=` is accepted for S3 as well as XO's `#region`; formatting writes `#region`.
 *
 * `parseRemoteUrl(formatRemoteUrl(x))` deep-equals `x` for every parsed `x`. Errors are RemoteUrlError
 * (`E_REMOTE_URL`) saying what is wrong, with the password already replaced by `***`.
 */
import { RemoteUrlError } from '../common/errors.js'
import { REDACTED, redactString } from '../common/redact.js'
import type { FileRemoteUrl, NfsRemoteUrl, RemoteUrl, RemoteUrlParam, RemoteUrlParams, S3RemoteUrl, SmbRemoteUrl } from './url-types.js'

// same shapes as XO's parser
const NFS_RE = /^([^:/?]+):(?:(\d+):)?([^:?]+)(\?[^?]*)?$/
const SMB_RE = /^([^:]+):(.+)@([^@]+)\\\\([^\0?]+)(?:\0([^?]*))?(\?[^?]*)?$/

/** Params whose values are secrets (replaced by `***` in displayed URLs). */
const SECRET_PARAMS = new Set(['encryptionKey'])

function fail(url: string, what: string): never {
  throw new RemoteUrlError(`invalid remote URL "${redactString(url)}": ${what}`, { fields: { url: redactString(url) } })
}

/** `/`-separated segments without empty ones; refuses `..` (a remote root must be explicit). */
function segments(url: string, path: string, sep: RegExp = /\//): string[] {
  const parts = path.split(sep).map((s) => s.trim()).filter((s) => s !== '' && s !== '.')
  if (parts.includes('..')) fail(url, `the path "${path}" contains "..": give the real directory`)
  return parts
}

function parseParams(url: string, query: string | undefined): RemoteUrlParams | undefined {
  if (query === undefined) return undefined
  const q = query.startsWith('?') ? query.slice(1) : query
  if (q === '') return undefined
  const params: RemoteUrlParams = {}
  for (const [key, raw] of new URLSearchParams(q)) {
    if (key === '') fail(url, 'the query string has an option with no name')
    let value: RemoteUrlParam
    if (raw === '') {
      value = false // XO reads empty values as false (some were saved that way)
    } else {
      try {
        const parsed: unknown = JSON.parse(raw)
        value = typeof parsed === 'string' || typeof parsed === 'number' || typeof parsed === 'boolean' || parsed === null ? parsed : raw
      } catch {
        value = raw // unquoted strings (`?region=us-east-1`): taken as they are
      }
    }
    params[key] = value
  }
  return Object.keys(params).length === 0 ? undefined : params
}

function formatParams(params: RemoteUrlParams | undefined, redact = false): string {
  if (params === undefined) return ''
  const entries = Object.entries(params)
  if (entries.length === 0) return ''
  const q = new URLSearchParams()
  for (const [k, v] of entries) q.append(k, redact && SECRET_PARAMS.has(k) ? JSON.stringify(REDACTED) : JSON.stringify(v))
  return `?${q.toString().replaceAll('+', '%20')}`
}

function withParams<T extends object>(obj: T, params: RemoteUrlParams | undefined): T & { params?: RemoteUrlParams } {
  return params === undefined ? obj : { ...obj, params }
}

function decode(url: string, what: string, value: string): string {
  try {
    return decodeURIComponent(value)
  } catch {
    return fail(url, `the ${what} is not valid URL encoding (encode special characters with %XX)`)
  }
}

function parsePort(url: string, value: string): number {
  const port = Number(value)
  if (!/^\d+$/.test(value) || port < 1 || port > 65535) fail(url, `the port "${value}" is not a number from 1 to 65535`)
  return port
}

function parseFile(url: string, rest: string): FileRemoteUrl {
  const q = rest.indexOf('?')
  const path = q === -1 ? rest : rest.slice(0, q)
  const parts = segments(url, path)
  return withParams({ type: 'file' as const, path: `/${parts.join('/')}` }, parseParams(url, q === -1 ? undefined : rest.slice(q)))
}

function parseNfs(url: string, rest: string): NfsRemoteUrl {
  const m = NFS_RE.exec(rest)
  if (m === null) fail(url, 'expected nfs://host[:port]:/export/path')
  const [, host = '', port, path = ''] = m
  const out: NfsRemoteUrl = { type: 'nfs', host, path: `/${segments(url, path).join('/')}` }
  if (port !== undefined) out.port = parsePort(url, port)
  return withParams(out, parseParams(url, m[4]))
}

function parseSmb(url: string, rest: string): SmbRemoteUrl {
  const m = SMB_RE.exec(rest)
  if (m === null) fail(url, 'expected smb://user:password@domain\\\\host\\share\\0subdir (\\0 is a NUL character)')
  const [, username = '', password = '', domain = '', hostShare = '', sub = ''] = m
  const sep = hostShare.indexOf('\\')
  if (sep <= 0 || sep === hostShare.length - 1) fail(url, 'expected host\\share after the domain (e.g. WORKGROUP\\\\192.168.1.2\\backups)')
  const host = hostShare.slice(0, sep)
  const share = hostShare.slice(sep + 1)
  if (share.includes('\\')) fail(url, `the share "${share}" contains "\\": put sub-directories after the \\0 separator`)
  const out: SmbRemoteUrl = { type: 'smb', host, share, domain, username, password, path: segments(url, sub, /[\\/]/).join('/') }
  return withParams(out, parseParams(url, m[6]))
}

function parseS3(url: string, protocol: 'https' | 'http'): S3RemoteUrl {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return fail(url, 'expected s3://ACCESS_KEY:SECRET@host[:port]/bucket/dir (URL-encode special characters in the keys)')
  }
  if (u.hostname === '') fail(url, 'the host is missing')
  const parts = segments(url, decode(url, 'path', u.pathname))
  const bucket = parts.shift()
  if (bucket === undefined) fail(url, 'the bucket is missing: expected s3://AK:SK@host/bucket[/dir]')
  const accessKeyId = decode(url, 'access key', u.username)
  const secretAccessKey = decode(url, 'secret key', u.password)
  if ((accessKeyId === '') !== (secretAccessKey === '')) fail(url, 'give both the access key and the secret key (s3://AK:SK@host/...), or neither')
  const out: S3RemoteUrl = { type: 's3', protocol, host: u.hostname, bucket, path: parts.join('/'), accessKeyId, secretAccessKey }
  if (u.port !== '') out.port = parsePort(url, u.port)
  const params = parseParams(url, u.search)
  let region: string | undefined = u.hash.length > 1 ? decode(url, 'region', u.hash.slice(1)) : undefined
  if (params !== undefined && 'region' in params) {
    const r = params.region
    delete params.region
    if (region === undefined && r !== null && r !== false) region = String(r)
  }
  if (region !== undefined) out.region = region
  return withParams(out, params !== undefined && Object.keys(params).length > 0 ? params : undefined)
}

/** Parses a remote URL in Xen Orchestra's format; RemoteUrlError (`E_REMOTE_URL`) saying what is wrong. */
export function parseRemoteUrl(url: string): RemoteUrl {
  if (typeof url !== 'string') fail(String(url), 'a URL must be a string')
  const i = url.indexOf('://')
  if (i === -1) fail(url, 'no scheme: expected file://, nfs://, smb://, s3:// or s3+http://')
  const scheme = url.slice(0, i)
  const rest = url.slice(i + 3)
  switch (scheme) {
    case 'file':
      return parseFile(url, rest)
    case 'nfs':
      return parseNfs(url, rest)
    case 'smb':
      return parseSmb(url, rest)
    case 's3':
      return parseS3(url, 'https')
    case 's3+http':
      return parseS3(url, 'http')
    default:
      return fail(url, `unknown scheme "${scheme}": expected file, nfs, smb, s3 or s3+http`)
  }
}

function formatWith(remote: RemoteUrl, redact: boolean): string {
  switch (remote.type) {
    case 'file':
      return `file:///${segments('file://', remote.path).join('/')}${formatParams(remote.params, redact)}`
    case 'nfs':
      return `nfs://${remote.host}:${remote.port === undefined ? '' : `${remote.port}:`}/${segments('nfs://', remote.path).join('/')}${formatParams(remote.params, redact)}`
    case 'smb': {
      const password = redact ? REDACTED : remote.password
      const sub = segments('smb://', remote.path, /[\\/]/).join('\\')
      return `smb://${remote.username}:${password}@${remote.domain}\\\\${remote.host}\\${remote.share}\0${sub}${formatParams(remote.params, redact)}`
    }
    case 's3': {
      const secret = redact ? REDACTED : encodeURIComponent(remote.secretAccessKey)
      const auth = remote.accessKeyId === '' && remote.secretAccessKey === '' ? '' : `${encodeURIComponent(remote.accessKeyId)}:${secret}@`
      const port = remote.port === undefined ? '' : `:${remote.port}`
      const path = [remote.bucket, ...segments('s3://', remote.path)].map(encodeURIComponent).join('/')
      const region = remote.region === undefined ? '' : `#${encodeURIComponent(remote.region)}`
      return `${remote.protocol === 'https' ? 's3' : 's3+http'}://${auth}${remote.host}${port}/${path}${formatParams(remote.params, redact)}${region}`
    }
  }
}

/** Formats a parsed remote URL back to Xen Orchestra's format (with its password). */
export function formatRemoteUrl(remote: RemoteUrl): string {
  return formatWith(remote, false)
}

/** The URL with its password / secret key / encryption key replaced by `***`: safe for logs and errors. */
export function redactRemoteUrl(remote: RemoteUrl | string): string {
  if (typeof remote !== 'string') return formatWith(remote, true)
  try {
    return formatWith(parseRemoteUrl(remote), true)
  } catch {
    return redactString(remote)
  }
}

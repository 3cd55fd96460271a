/**
 * The API's TLS certificate: the configured `api.certFile` / `api.keyFile`, or — as Xen Orchestra's proxy
 * does with its `autoCert` — a self-signed one generated once and kept in `api.stateDir`
 * (`cert.pem`, `key.pem` mode 0600), so XO sees the same certificate after every restart.
 *
 * Generation runs the `openssl req` command (the way XO's own self-signed helper does it): no npm
 * dependency, and OpenSSL is on every system the proxy runs on. Without it, the error says to install it
 * or to configure a certificate. The two files are written under temporary names and renamed, so a crash
 * never leaves a key without its certificate.
 */
import { execFile } from 'node:child_process'
import { chmod, mkdir, readFile, rename, rm } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { BackupProxyError, ConfigInvalidError } from '../common/errors.js'

export interface TlsMaterial {
  cert: string
  key: string
  /** where it came from: 'config' or the generated files' directory */
  source: string
  generated: boolean
}

interface CertificateOptions {
  certFile?: string | undefined
  keyFile?: string | undefined
  stateDir: string
  /** openssl binary (tests); default `openssl` from PATH */
  openssl?: string
}

function run(cmd: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 60_000 }, (error, _stdout, stderr) => {
      if (error === null) resolve()
      else {
        const failure: Error = Object.assign(error, { stderr: stderr.slice(0, 2000) })
        reject(failure)
      }
    })
  })
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

async function fromConfig(certFile: string, keyFile: string): Promise<TlsMaterial> {
  const read = async (path: string, key: string) => {
    try {
      return await readFile(path, 'utf8')
    } catch (error) {
      throw new ConfigInvalidError([{ path: key, message: `cannot read ${path}: ${(error as Error).message}` }], { cause: error })
    }
  }
  return { cert: await read(certFile, 'api.certFile'), key: await read(keyFile, 'api.keyFile'), source: 'config', generated: false }
}

/** Makes a self-signed certificate for `commonName` (10 years, RSA 2048) in `dir`. */
async function generate(dir: string, openssl: string): Promise<void> {
  const suffix = `.tmp-${process.pid}-${Date.now()}`
  const certTmp = join(dir, `cert.pem${suffix}`)
  const keyTmp = join(dir, `key.pem${suffix}`)
  const cn = hostname().replace(/[^A-Za-z0-9.-]/g, '') || 'backup-proxy'
  try {
    await run(openssl, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '3650', '-subj', `/CN=${cn}`, '-keyout', keyTmp, '-out', certTmp])
    await chmod(keyTmp, 0o600)
    await rename(keyTmp, join(dir, 'key.pem'))
    await rename(certTmp, join(dir, 'cert.pem'))
  } catch (error) {
    await rm(certTmp, { force: true })
    await rm(keyTmp, { force: true })
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' && (error as { path?: string }).path === openssl) {
      throw new BackupProxyError('E_API_CERT', `cannot generate the API certificate: "${openssl}" is not installed; install OpenSSL or set api.certFile and api.keyFile`, { cause: error })
    }
    const stderr = (error as { stderr?: string }).stderr ?? ''
    throw new BackupProxyError('E_API_CERT', `cannot generate the API certificate in ${dir}: ${(error as Error).message.split('\n')[0] ?? ''} ${stderr.trim()}; check the directory is writable or set api.certFile and api.keyFile`, { cause: error })
  }
}

/** The certificate the API serves (see the header). */
export async function loadCertificate(options: CertificateOptions): Promise<TlsMaterial> {
  const { certFile, keyFile, stateDir } = options
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new ConfigInvalidError([{ path: certFile === undefined ? 'api.certFile' : 'api.keyFile', message: 'api.certFile and api.keyFile go together: set both, or neither for a self-signed certificate' }])
  }
  if (certFile !== undefined && keyFile !== undefined) return fromConfig(certFile, keyFile)
  try {
    await mkdir(stateDir, { recursive: true, mode: 0o700 })
  } catch (error) {
    throw new BackupProxyError('E_API_CERT', `cannot create the API state directory ${stateDir}: ${(error as Error).message}; set api.stateDir to a writable directory`, { cause: error })
  }
  const certPath = join(stateDir, 'cert.pem')
  const keyPath = join(stateDir, 'key.pem')
  let [cert, key] = await Promise.all([readIfExists(certPath), readIfExists(keyPath)])
  let generated = false
  if (cert === undefined || key === undefined) {
    await generate(stateDir, options.openssl ?? 'openssl')
    ;[cert, key] = await Promise.all([readFile(certPath, 'utf8'), readFile(keyPath, 'utf8')])
    generated = true
  }
  return { cert, key, source: stateDir, generated }
}

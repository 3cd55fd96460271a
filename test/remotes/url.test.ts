/** XO remote URLs: parse/format round trips, XO's own examples, errors that say what is wrong, redaction. */
import { describe, expect, it } from 'vitest'
import { RemoteUrlError } from '../../src/common/errors.js'
import { formatRemoteUrl, parseRemoteUrl, redactRemoteUrl } from '../../src/remotes/url.js'
import { createRemote, loadRemote, optionsFromUrl } from '../../src/remotes/index.js'
import { useVhdDirectory } from '../../src/remotes/remote.js'

describe('parseRemoteUrl / formatRemoteUrl', () => {
  const cases: [string, unknown][] = [
    ['file:///var/backups', { type: 'file', path: '/var/backups' }],
    ['file:///var/backups?useVhdDirectory=true', { type: 'file', path: '/var/backups', params: { useVhdDirectory: true } }],
    ['nfs://10.213.77.2:/export/backups', { type: 'nfs', host: '10.213.77.2', path: '/export/backups' }],
    ['nfs://nas.lan:2050:/export/backups/sub', { type: 'nfs', host: 'nas.lan', port: 2050, path: '/export/backups/sub' }],
    ['smb://backup:backup-pass@WORKGROUP\\\\127.0.0.1\\backups\0', { type: 'smb', host: '127.0.0.1', share: 'backups', domain: 'WORKGROUP', username: 'backup', password: 'backup-pass', path: '' }],
    ['smb://u:p@ss:w@rd@DOM\\\\srv\\share\0a\\b', { type: 'smb', host: 'srv', share: 'share', domain: 'DOM', username: 'u', password: 'p@ss:w@rd', path: 'a/b' }],
    [
      's3+http://test%3Atester:testing@127.0.0.1:9000/backups/xo',
      { type: 's3', protocol: 'http', host: '127.0.0.1', port: 9000, bucket: 'backups', path: 'xo', accessKeyId: 'test:tester', secretAccessKey: 'testing' },
    ],
    [
      's3://AKIA:se%2Fcr%2Bet@s3.amazonaws.com/bucket/a/b?useVhdDirectory=true#eu-west-3',
      { type: 's3', protocol: 'https', host: 's3.amazonaws.com', bucket: 'bucket', path: 'a/b', accessKeyId: 'AKIA', secretAccessKey: 'se/cr+et', region: 'eu-west-3', params: { useVhdDirectory: true } },
    ],
  ]
  for (const [url, parsed] of cases) {
    it(`parses and formats ${JSON.stringify(url)}`, () => {
      expect(parseRemoteUrl(url)).toEqual(parsed)
      expect(formatRemoteUrl(parseRemoteUrl(url))).toBe(url)
      expect(parseRemoteUrl(formatRemoteUrl(parseRemoteUrl(url)))).toEqual(parsed)
    })
  }

  it('accepts ?region= for S3 and normalizes it to the fragment', () => {
    const p = parseRemoteUrl('s3://a:b@h/bk?region=us-east-1&allowUnauthorized=true')
    expect(p).toMatchObject({ region: 'us-east-1', params: { allowUnauthorized: true } })
    expect(formatRemoteUrl(p)).toBe('s3://a:b@h/bk?allowUnauthorized=true#us-east-1')
    expect(optionsFromUrl(p)).toEqual({ allowUnauthorized: true })
  })

  it('round-trips passwords and keys full of special characters', () => {
    for (const secret of ['p@ss/w:rd?#%&=+ é', 'x'.repeat(40)]) {
      const url = formatRemoteUrl({ type: 's3', protocol: 'https', host: 'h', bucket: 'b', path: 'p/q', accessKeyId: 'k:y', secretAccessKey: secret })
      expect(parseRemoteUrl(url)).toMatchObject({ accessKeyId: 'k:y', secretAccessKey: secret, path: 'p/q' })
    }
    const smb = { type: 'smb' as const, host: 'h', share: 's', domain: 'D', username: 'u', password: 'a:b@c\\d', path: 'x/y' }
    expect(parseRemoteUrl(formatRemoteUrl(smb))).toEqual(smb)
  })

  it('keeps XO query options (JSON values) and the encryption key', () => {
    const p = parseRemoteUrl('file:///b?encryptionKey=%2212345678901234567890123456789012%22&useVhdDirectory=true')
    expect(optionsFromUrl(p)).toEqual({ encryptionKey: '12345678901234567890123456789012', useVhdDirectory: true })
    expect(parseRemoteUrl(formatRemoteUrl(p))).toEqual(p)
    expect(redactRemoteUrl(p)).not.toContain('1234567890')
  })

  it('an encrypted remote is always VhdDirectory: useVhdDirectory=false with a key is refused, as xo-server does', () => {
    const refused = 'file:///b?encryptionKey=%2212345678901234567890123456789012%22&useVhdDirectory=false'
    expect(() => createRemote(refused)).toThrow(RemoteUrlError)
    expect(() => createRemote(refused)).toThrow(/encryption must be used with VHD directory/)
    expect(() => createRemote(refused)).not.toThrow(/1234567890/)
    const encrypted = createRemote('file:///b', { encryptionKey: '12345678901234567890123456789012' })
    expect(encrypted.forcesVhdDirectory).toBe(true)
    expect(useVhdDirectory(encrypted, {})).toBe(true)
    const plain = createRemote('file:///b')
    expect(plain.forcesVhdDirectory).toBe(false)
    expect(useVhdDirectory(plain, {})).toBe(false)
    expect(useVhdDirectory(plain, { useVhdDirectory: true })).toBe(true)
  })

  it('loadRemote (one scheme imported) gives the remote createRemote gives, and refuses what it refuses', async () => {
    const key = { encryptionKey: '12345678901234567890123456789012' }
    for (const [url, options] of [['file:///b', {}], ['file:///b', key], ['s3://a:b@h/bk/p', {}], ['nfs://h:/export/b', {}], ['smb://u:p@D\\\\h\\s\0b', key]] as const) {
      const [made, loaded] = [createRemote(url, options), await loadRemote(url, options)]
      expect(loaded.constructor, url).toBe(made.constructor)
      expect([loaded.displayUrl, loaded.forcesVhdDirectory], url).toEqual([made.displayUrl, made.forcesVhdDirectory])
    }
    const refused = 'file:///b?encryptionKey=%2212345678901234567890123456789012%22&useVhdDirectory=false'
    await expect(loadRemote(refused)).rejects.toThrow(/encryption must be used with VHD directory/)
    await expect(loadRemote('ftp://host/x')).rejects.toThrow(RemoteUrlError)
  })

  const bad: [string, RegExp][] = [
    ['backups', /no scheme/],
    ['ftp://host/x', /unknown scheme "ftp"/],
    ['nfs://host/export', /nfs:\/\/host\[:port\]:\/export\/path/],
    ['nfs://host:99999:/export', /port "99999"/],
    ['smb://user@host/share', /smb:\/\/user:password@domain/],
    ['smb://u:secretpw@D\\\\hostonly\0', /host\\share/],
    ['s3://a:secretpw@host', /bucket is missing/],
    ['s3://a:@host/b', /both the access key and the secret key/],
    ['s3://a:b@host/b/%E0%A4%A', /not valid URL encoding/],
    ['file:///a/../b', /contains "\.\."/],
  ]
  for (const [url, message] of bad) {
    it(`refuses ${JSON.stringify(url)} with E_REMOTE_URL`, () => {
      let error: unknown
      try {
        parseRemoteUrl(url)
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(RemoteUrlError)
      expect((error as RemoteUrlError).code).toBe('E_REMOTE_URL')
      expect((error as Error).message).toMatch(message)
      expect((error as Error).message).not.toContain('secretpw')
    })
  }

  it('redacts passwords and secret keys as ***', () => {
    expect(redactRemoteUrl('s3+http://test%3Atester:testing@127.0.0.1:9000/backups/xo')).toBe('s3+http://test%3Atester:***@127.0.0.1:9000/backups/xo')
    expect(redactRemoteUrl('smb://backup:backup-pass@WORKGROUP\\\\127.0.0.1\\backups\0')).not.toContain('backup-pass')
    expect(redactRemoteUrl('smb://backup:backup-pass@WORKGROUP\\\\127.0.0.1\\backups\0')).toContain(':***@')
    expect(redactRemoteUrl('not a url, pw in s3://a:zzz@h')).not.toContain('zzz')
  })
})

/**
 * Secrets for the command line from a file or the environment (src/cli/secrets.ts): the XAPI password
 * and a remote's password or S3 secret key fill in a URL that names the user without them; the file wins
 * over the environment, which wins over a password in the URL; a missing password says where to put it
 * without printing anything secret.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { parseRemoteUrl } from '../../src/remotes/url.js'
import { REMOTE_PASSWORD_ENV, remoteUrlWithSecret, XAPI_PASSWORD_ENV, xapiTarget } from '../../src/cli/secrets.js'
import { makeTempDir } from '../helpers/tmp.js'

describe('secrets from files or the environment', () => {
  it('XAPI: file, then environment, then URL; an error without one names the options', async () => {
    const tmp = await makeTempDir('bp-secrets-')
    try {
      const file = join(tmp.path, 'pw')
      await writeFile(file, 'from-file\n')
      expect(await xapiTarget('https://root@master.example/', { xapiPasswordFile: file }, { [XAPI_PASSWORD_ENV]: 'from-env' })).toEqual({ url: 'https://master.example', username: 'root', password: 'from-file' })
      expect((await xapiTarget('https://root:in-url@master.example', {}, { [XAPI_PASSWORD_ENV]: 'from-env' })).password).toBe('from-env')
      expect((await xapiTarget('https://root:in%40url@master.example', {}, {})).password).toBe('in@url')
      expect((await xapiTarget('https://master.example', { xapiUser: 'admin' }, { [XAPI_PASSWORD_ENV]: 'p' })).username).toBe('admin')
      await expect(xapiTarget('https://root@master.example', {}, {})).rejects.toMatchObject({ code: 'E_USAGE', message: expect.stringContaining('--xapi-password-file') as unknown })
      await expect(xapiTarget('https://root@master.example', { xapiPasswordFile: join(tmp.path, 'missing') }, {})).rejects.toMatchObject({ code: 'E_USAGE' })
    } finally {
      await tmp.remove()
    }
  })

  it('remotes: the S3 secret key and the SMB password fill a URL naming the user; other URLs are unchanged', async () => {
    const env = { [REMOTE_PASSWORD_ENV]: 'se/cr:et@1' }
    const s3 = parseRemoteUrl(await remoteUrlWithSecret('s3://AKID@minio.example:9000/bucket/dir#us-east-1', {}, env))
    expect(s3).toMatchObject({ type: 's3', accessKeyId: 'AKID', secretAccessKey: 'se/cr:et@1', bucket: 'bucket', path: 'dir', region: 'us-east-1' })
    const smb = parseRemoteUrl(await remoteUrlWithSecret('smb://backup@WORKGROUP\\\\fs.example\\share\0sub', {}, env))
    expect(smb).toMatchObject({ type: 'smb', username: 'backup', password: 'se/cr:et@1', host: 'fs.example', share: 'share', path: 'sub' })
    expect(await remoteUrlWithSecret('s3://AK:given@host/b', {}, env)).toBe('s3://AK:given@host/b')
    expect(await remoteUrlWithSecret('file:///backups', {}, env)).toBe('file:///backups')
    expect(await remoteUrlWithSecret('s3://AKID@host/b', {}, {})).toBe('s3://AKID@host/b')
  })
})

/**
 * S3 client behaviour that a well-behaved server cannot show: certificate checking (`allowUnauthorized`)
 * and which failures are retried. A small HTTPS server with a self-signed certificate stands in for
 * S3 here (a fake, on purpose: Swift cannot be told to answer 503 or 403 on demand); it counts requests
 * and answers HeadBucket with the scripted statuses.
 */
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:https'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { S3Remote } from '../../src/remotes/s3.js'
import { useTempDir } from '../helpers/tmp.js'
import { expectCode } from './conformance.js'

const exec = promisify(execFile)
const tmp = useTempDir('bp-s3-tls-')
let server: Server
let port = 0
let script: number[] = []
let requests = 0

beforeAll(async () => {
  const key = join(tmp(), 'key.pem')
  const cert = join(tmp(), 'cert.pem')
  await exec('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1'])
  server = createServer({ key: await readFile(key), cert: await readFile(cert) }, (req, res) => {
    requests++
    const status = script.shift() ?? 200
    req.resume()
    res.writeHead(status, { 'content-type': 'application/xml' })
    res.end(status === 200 ? '' : `<?xml version="1.0"?><Error><Code>${status === 403 ? 'AccessDenied' : status === 503 ? 'SlowDown' : 'InternalError'}</Code><Message>scripted</Message></Error>`)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const addr = server.address()
  port = typeof addr === 'object' && addr !== null ? addr.port : 0
})

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()))
})

const url = () => ({ type: 's3' as const, protocol: 'https' as const, host: '127.0.0.1', port, bucket: 'b', path: '', accessKeyId: 'ak', secretAccessKey: 'sk' })

describe('S3 over TLS and retries', () => {
  it('refuses a self-signed certificate unless allowUnauthorized', async () => {
    script = []
    const strict = new S3Remote(url(), { s3MaxAttempts: 1 })
    const error = await expectCode(strict.open(), 'EACCES')
    expect(error.message).toMatch(/certificate is not trusted .*allowUnauthorized/)
    await strict.close()
    const lax = new S3Remote(url(), { allowUnauthorized: true, s3MaxAttempts: 1 })
    await lax.open()
    await lax.close()
  })

  it('retries throttling and 5xx with backoff, but not 403', async () => {
    const remote = new S3Remote(url(), { allowUnauthorized: true, s3MaxAttempts: 4 })
    script = [503, 500]
    requests = 0
    await remote.open()
    expect(requests).toBe(3)
    await remote.close()
    const denied = new S3Remote(url(), { allowUnauthorized: true, s3MaxAttempts: 4 })
    script = [403]
    requests = 0
    await expectCode(denied.open(), 'EACCES')
    expect(requests).toBe(1)
    await denied.close()
  })
})

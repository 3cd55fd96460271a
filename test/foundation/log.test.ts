import { Writable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { createLogger } from '../../src/common/log.js'
import { redact, redactString } from '../../src/common/redact.js'
import { XapiError } from '../../src/common/errors.js'

function capture(): { stream: Writable; text: () => string } {
  let out = ''
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out += chunk.toString()
      cb()
    },
  })
  return { stream, text: () => out }
}

const SECRET = 'hunter2-Sup3r-s3cret'

describe('logging', () => {
  it('never writes a password, by key at any depth, in URLs, messages or errors', async () => {
    const { stream, text } = capture()
    const log = createLogger({ destination: stream, level: 'info' })
    log.info({ remote: { url: `smb://backup:${SECRET}@WORKGROUP\\\\host\\share`, options: { password: SECRET } } }, 'remote opened')
    log.info({ xapis: { a: { credentials: { username: 'root', password: SECRET } } } }, 'task')
    log.info({ s3: { accessKeyId: 'AKIA', secretAccessKey: SECRET, sessionToken: SECRET, sealKey: SECRET } }, 'keys')
    log.warn(`connecting to s3://AK:${SECRET}@127.0.0.1:9000/bucket`)
    log.error({ err: new XapiError(`login failed for https://root:${SECRET}@pool`, { fields: { password: SECRET } }) }, 'xapi')
    log.flush()
    await new Promise((r) => setImmediate(r))
    const out = text()
    expect(out).toContain('remote opened')
    expect(out).toContain('AKIA') // access key ids are not secrets
    expect(out).toContain('root')
    expect(out).not.toContain(SECRET)
    expect(out.split('\n').filter((l) => l !== '').every((l) => JSON.parse(l) !== null)).toBe(true)
  })

  it('redact returns the same object when nothing is secret', () => {
    const o = { a: 1, b: { c: 'x' } }
    expect(redact(o)).toBe(o)
    expect(redactString('http://host/path')).toBe('http://host/path')
    expect(redactString('s3+http://test%3Atester:testing@127.0.0.1:9000/b')).toBe('s3+http://test%3Atester:***@127.0.0.1:9000/b')
  })
})

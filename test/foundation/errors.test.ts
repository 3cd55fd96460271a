import { MessageChannel } from 'node:worker_threads'
import { Redis } from 'ioredis'
import { describe, expect, inject, it } from 'vitest'
import {
  BackupProxyError,
  CancelledError,
  ConfigInvalidError,
  RemoteError,
  VhdCorruptError,
  XapiError,
  deserializeError,
  errorCode,
  serializeError,
  toError,
} from '../../src/common/errors.js'

function sample(): Error {
  const root = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET', port: 443 })
  const xapi = new XapiError('XAPI refused the session: check the pool credentials', { cause: root, fields: { xapiCode: 'SESSION_AUTHENTICATION_FAILED', params: ['root'] } })
  return new VhdCorruptError('BAT entry 7 points past the end of the stream', { cause: xapi, fields: { structure: 'bat', field: 'entry[7]', offset: 3584 } })
}

function checkRoundTrip(back: Error): void {
  expect(back).toBeInstanceOf(VhdCorruptError)
  expect(back).toBeInstanceOf(BackupProxyError)
  expect(errorCode(back)).toBe('E_VHD_CORRUPT')
  expect(back.message).toBe('BAT entry 7 points past the end of the stream')
  expect((back as VhdCorruptError).fields).toEqual({ structure: 'bat', field: 'entry[7]', offset: 3584 })
  const cause = back.cause as XapiError
  expect(cause).toBeInstanceOf(XapiError)
  expect(cause.code).toBe('E_XAPI')
  expect(cause.xapiCode).toBe('SESSION_AUTHENTICATION_FAILED')
  const root = cause.cause as Error & { code?: string; port?: number }
  expect(root).toBeInstanceOf(Error)
  expect(root.code).toBe('ECONNRESET')
  expect(root.port).toBe(443)
  expect(root.message).toBe('socket hang up')
}

describe('errors', () => {
  it('every class has a stable code and its own name', () => {
    expect(new CancelledError().code).toBe('E_CANCELLED')
    expect(new CancelledError().name).toBe('CancelledError')
    expect(new RemoteError('ENOENT', 'no such file').code).toBe('ENOENT')
    const config = new ConfigInvalidError([{ path: 'workers.threads', message: 'expected a number' }])
    expect(config.code).toBe('E_CONFIG_INVALID')
    expect(config.message).toContain('workers.threads: expected a number')
  })

  it('round-trips through JSON (a Redis job) with code, fields and cause chain', () => {
    checkRoundTrip(deserializeError(JSON.parse(JSON.stringify(serializeError(sample())))))
  })

  it("rebuilds a foreign error whose own properties include name (Node's stream AbortError, from a thread)", () => {
    // node:internal/errors AbortError sets name and code as own properties, as many libraries' errors do
    const foreign = Object.assign(new Error('The operation was aborted'), { name: 'AbortError', code: 'ABORT_ERR', extra: 1 })
    const back = deserializeError(JSON.parse(JSON.stringify(serializeError(foreign))))
    expect(back).toBeInstanceOf(Error)
    expect(back.name).toBe('AbortError')
    expect(back.message).toBe('The operation was aborted')
    expect((back as Error & { extra?: number }).extra).toBe(1)
  })

  it('round-trips through a MessagePort (structured clone, as between threads)', async () => {
    const { port1, port2 } = new MessageChannel()
    const received = new Promise<unknown>((resolve) => port2.once('message', resolve))
    port1.postMessage(serializeError(sample()))
    const data = await received
    port1.close()
    port2.close()
    checkRoundTrip(deserializeError(data))
  })

  it('round-trips through a real Redis', async () => {
    const redis = new Redis(inject('redisUrl'))
    try {
      await redis.set('bp-test:error', JSON.stringify(serializeError(sample())))
      checkRoundTrip(deserializeError(JSON.parse((await redis.get('bp-test:error'))!)))
    } finally {
      await redis.quit()
    }
  })

  it('keeps ConfigInvalidError issues and unknown coded errors', () => {
    const back = deserializeError(JSON.parse(JSON.stringify(serializeError(new ConfigInvalidError([{ path: 'a.b', message: 'bad' }])))))
    expect(back).toBeInstanceOf(ConfigInvalidError)
    expect((back as ConfigInvalidError).issues).toEqual([{ path: 'a.b', message: 'bad' }])
    const unknown = deserializeError({ name: 'FutureError', code: 'E_SOMETHING_NEW', message: 'later' })
    expect(unknown).toBeInstanceOf(BackupProxyError)
    expect(errorCode(unknown)).toBe('E_SOMETHING_NEW')
  })

  it('never loses a non-Error thrown value', () => {
    const e = toError({ weird: 1 })
    expect(e).toBeInstanceOf(BackupProxyError)
    expect(e.message).toContain('weird')
    expect(deserializeError('garbage').message).toContain('garbage')
  })
})

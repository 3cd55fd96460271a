/**
 * The API transport against a real HTTPS server, called as xo-server calls it: the self-signed
 * certificate made once and kept, the cookie (401 without it or with a wrong one, logged without the
 * token), the introspection methods (NDJSON for their array answers, as XO's proxy), and 30 malformed
 * requests that each get a JSON-RPC error with a code while the server keeps answering.
 */
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { startApi, type RunningApi } from '../../src/api/index.js'
import { badTokenDelayMs } from '../../src/api/auth.js'
import { VERSION } from '../../src/version.js'
import { makeTempDir } from '../helpers/tmp.js'
import { apiConfig, apiFixture, capturedLogger, type ApiFixture, type CapturedLogger } from './helpers.js'
import { rawCall, XoJsonRpcError, XoProxyClient } from './xo-client.js'

const redisUrl = inject('redisUrl')
let dir: { path: string; remove: () => Promise<void> }
let f: ApiFixture
let api: RunningApi
let log: CapturedLogger
let client: XoProxyClient

beforeAll(async () => {
  dir = await makeTempDir('bp-api-')
  f = await apiFixture()
  log = capturedLogger()
  api = (await startApi({ config: apiConfig(f, redisUrl, dir.path, { maxBodyBytes: 64 * 1024 }), logger: log.logger, sealKey: f.sealKey, throttle: { baseDelayMs: 1, maxDelayMs: 5 } }))!
  client = new XoProxyClient(api.url, f.token)
})

afterAll(async () => {
  await api?.close()
  await dir?.remove()
})

describe('certificate', () => {
  it('generates a self-signed certificate once in the state directory and reuses it', async () => {
    const certPath = join(dir.path, 'cert.pem')
    const before = await readFile(certPath, 'utf8')
    expect(before).toContain('BEGIN CERTIFICATE')
    expect((await stat(join(dir.path, 'key.pem'))).mode & 0o777).toBe(0o600)
    const again = (await startApi({ config: apiConfig(f, redisUrl, dir.path), logger: log.logger, sealKey: f.sealKey }))!
    try {
      expect(await new XoProxyClient(again.url, f.token).call('system.getServerVersion')).toBe(VERSION)
      expect(await readFile(certPath, 'utf8')).toBe(before)
    } finally {
      await again.close()
    }
  })

  it('names api.listen when its address cannot be used', async () => {
    const config = apiConfig(f, redisUrl, dir.path)
    const taken = { ...config, api: { ...config.api, listen: `127.0.0.1:${api.port}` } }
    await expect(startApi({ config: taken, logger: log.logger, sealKey: f.sealKey })).rejects.toMatchObject({ code: 'E_CONFIG_INVALID', message: expect.stringContaining('api.listen') as unknown })
  })

  it('is not served at all without a token hash', async () => {
    const config = apiConfig(f, redisUrl, dir.path)
    const disabled = await startApi({ config: { ...config, api: { ...config.api, tokenHash: undefined } }, logger: log.logger, sealKey: f.sealKey })
    expect(disabled).toBeUndefined()
  })
})

describe('authentication', () => {
  it('answers a good token', async () => {
    expect(await client.call('system.getServerVersion')).toBe(VERSION)
  })

  it.each([
    ['a wrong token', 'x'.repeat(43)],
    ['an empty token', ''],
    ['the token with one character changed', 'CHANGED'],
  ])('refuses %s with 401', async (_what, token) => {
    const bad = new XoProxyClient(api.url, token === 'CHANGED' ? `${f.token.slice(0, -1)}${f.token.endsWith('A') ? 'B' : 'A'}` : token)
    await expect(bad.call('system.getServerVersion')).rejects.toThrow(/^401 /)
  })

  it('refuses a request without the cookie with 401', async () => {
    const r = await rawCall(api.url, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'system.getServerVersion' }))
    expect(r.status).toBe(401)
  })

  it('slows repeated bad tokens down, exponentially and capped', () => {
    expect(badTokenDelayMs(0)).toBe(0)
    expect(badTokenDelayMs(1, 250)).toBe(250)
    expect(badTokenDelayMs(3, 250)).toBe(1000)
    expect(badTokenDelayMs(100, 250, 10_000)).toBe(10_000)
  })

  it('logs refusals with the address and never the token', async () => {
    await expect(new XoProxyClient(api.url, `${f.token}x`).call('system.getServerVersion')).rejects.toThrow(/^401 /)
    const text = log.text()
    expect(text).toMatch(/wrong authentication token/)
    expect(text).toMatch(/"remoteAddress":"(::ffff:)?127\.0\.0\.1"/)
    expect(text).not.toContain(f.token)
  })
})

describe('introspection', () => {
  it('lists its methods as NDJSON, as XO does for array answers', async () => {
    const names = await client.collect('system.listMethods')
    expect(names).toEqual(expect.arrayContaining(['system.getServerVersion', 'backup.run', 'backup.listVmBackups', 'backup.listRunningJobs', 'task.cancel', 'remote.test', 'event.from']))
  })

  it('gives a method signature (by `method`, XO proxy style, or `name`)', async () => {
    const s = (await client.call('system.methodSignature', { method: 'backup.deleteVmBackup' })) as { name: string; params: { properties: Record<string, unknown> } }
    expect(s.name).toBe('backup.deleteVmBackup')
    expect(Object.keys(s.params.properties).sort()).toEqual(['filename', 'remote'])
    expect(((await client.call('system.methodSignature', { name: 'task.get' })) as { name: string }).name).toBe('task.get')
    await expect(client.call('system.methodSignature', { method: 'nope.nope' })).rejects.toMatchObject({ code: 1 })
  })

  it('answers event.from with the current tasks and a token', async () => {
    const r = (await client.call('event.from', { token: '' })) as { events: unknown[]; token: string }
    expect(Array.isArray(r.events)).toBe(true)
    expect(r.token).toMatch(/^\d+$/)
  })
})

describe('remote methods', () => {
  it('tests, pings and sizes a local remote, with XO’s result shapes', async () => {
    const remote = { url: `file://${dir.path}`, options: '' }
    const t = (await client.call('remote.test', { remote })) as { success: boolean; writeRate: number; readRate: number }
    expect(t.success).toBe(true)
    expect(t.writeRate).toBeGreaterThan(0)
    expect(t.readRate).toBeGreaterThan(0)
    expect(await client.call('remote.ping', { remote })).toEqual({ success: true })
    const info = (await client.call('remote.getInfo', { remote })) as { size: number; used: number; available: number }
    expect(info.size).toBeGreaterThan(0)
    expect(info.available).toBeLessThanOrEqual(info.size)
  })

  it('answers a failed test as {success: false, error} without the password', async () => {
    const t = (await client.call('remote.test', { remote: { url: 's3+http://AK:SECRETKEY@127.0.0.1:1/bucket/dir' } })) as { success: boolean; error: string }
    expect(t.success).toBe(false)
    expect(t.error.length).toBeGreaterThan(0)
    expect(t.error).not.toContain('SECRETKEY')
  })
})

describe('malformed requests', () => {
  const cookie = () => ({ Cookie: `authenticationToken=${f.token}` })
  const rpc = (method: unknown, params?: unknown, extra: Record<string, unknown> = {}) => JSON.stringify({ jsonrpc: '2.0', id: 7, method, ...(params === undefined ? {} : { params }), ...extra })
  const cases: [string, () => string | Buffer, number, number?][] = [
    ['not JSON', () => '{"jsonrpc":', -32700],
    ['empty body', () => '', -32700],
    ['binary garbage', () => Buffer.from([0xff, 0xfe, 0x00, 0x01]), -32700],
    ['a JSON string', () => '"hello"', -32600],
    ['a JSON number', () => '42', -32600],
    ['null', () => 'null', -32600],
    ['a batch', () => `[${rpc('system.getServerVersion')}]`, -32600],
    ['no jsonrpc member', () => JSON.stringify({ id: 1, method: 'system.getServerVersion' }), -32600],
    ['jsonrpc 1.0', () => JSON.stringify({ jsonrpc: '1.0', id: 1, method: 'system.getServerVersion' }), -32600],
    ['no method', () => JSON.stringify({ jsonrpc: '2.0', id: 1 }), -32600],
    ['a numeric method', () => rpc(12), -32600],
    ['an empty method', () => rpc(''), -32600],
    ['an object id', () => rpc('system.getServerVersion', undefined, { id: { a: 1 } }), -32600],
    ['positional params', () => rpc('system.getServerVersion', [1, 2]), 10],
    ['params null', () => rpc('system.getServerVersion', null), 10],
    ['an unknown method', () => rpc('nope.nope'), -32601],
    ['an XO method we do not have', () => rpc('backup.fetchPartitionFiles', { remote: {} }), -32601],
    ['a prototype method name', () => rpc('__proto__'), -32601],
    ['toString as a method', () => rpc('toString'), -32601],
    ['an unknown parameter', () => rpc('system.getServerVersion', { extra: 1 }), 10],
    ['task.get without taskId', () => rpc('task.get', {}), 10],
    ['task.get with a numeric taskId', () => rpc('task.get', { taskId: 5 }), 10],
    ['task.get of an unknown task', () => rpc('task.get', { taskId: 'nope' }), 1],
    ['task.cancel of an unknown task', () => rpc('task.cancel', { taskId: 'nope' }), 1],
    ['backup.run without job', () => rpc('backup.run', { remotes: {}, schedule: { id: 's' } }), 10],
    ['backup.run with a string job', () => rpc('backup.run', { job: 'x', remotes: {}, schedule: { id: 's' } }), 10],
    ['backup.listVmBackups with a bad remote URL', () => rpc('backup.deleteVmBackup', { filename: '/xo-vm-backups/x.json', remote: { url: 'ftp://nope' } }), 10],
    ['backup.deleteVmBackup with a path outside backups', () => rpc('backup.deleteVmBackup', { filename: '../../etc/passwd', remote: { url: `file://${dir.path}` } }), -32000],
    ['backup.importVmBackup without remote, SR and XAPI', () => rpc('backup.importVmBackup', { backupId: 'x' }), 10],
    ['event.from with a negative timeout', () => rpc('event.from', { token: '', timeout: -1 }), 10],
  ]

  it.each(cases)('%s → JSON-RPC error', async (_what, body, code) => {
    const r = await rawCall(api.url, body(), cookie())
    expect(r.status).toBe(200)
    expect(r.headers['content-type']).toMatch(/^application\/json/)
    const answer = JSON.parse(r.body) as { jsonrpc: string; error: { code: number; message: string; data?: { code?: string } } }
    expect(answer.jsonrpc).toBe('2.0')
    expect(answer.error.code).toBe(code)
    expect(answer.error.message.length).toBeGreaterThan(0)
    expect(JSON.stringify(answer)).not.toContain('"stack"')
  })

  it('refuses a huge body with 413 and a JSON-RPC error, then keeps serving', async () => {
    const huge = rpc('system.getServerVersion', { pad: 'x'.repeat(200 * 1024) })
    const r = await rawCall(api.url, huge, cookie())
    expect(r.status).toBe(413)
    expect((JSON.parse(r.body) as { error: { code: number; data: { code: string } } }).error).toMatchObject({ code: -32600, data: { code: 'E_API_REQUEST' } })
    expect(await client.call('system.getServerVersion')).toBe(VERSION)
  })

  it('answers 404 elsewhere and 405 to other verbs', async () => {
    expect((await rawCall(api.url.replace('/api/v1', '/other'), '{}', cookie())).status).toBe(404)
    expect((await rawCall(api.url, '', cookie(), 'GET')).status).toBe(405)
  })

  it('is still healthy after all of them, and an XO error code reaches the client', async () => {
    expect(await client.call('system.getServerVersion')).toBe(VERSION)
    const error = await client.call('task.get', { taskId: 'nope' }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(XoJsonRpcError)
    expect((error as XoJsonRpcError).data).toMatchObject({ id: 'nope' })
  })
})

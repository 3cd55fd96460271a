/**
 * The transport's answer kinds, with methods of our own on a real HTTPS server and XO's client: a
 * binary answer (application/octet-stream, read as XO's 'stream'), an iterator (NDJSON) and an iterator
 * that fails before its first value (still a JSON-RPC error, as XO's proxy), and XO's type assertions.
 */
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { BadTokenThrottle, createAuthenticator } from '../../src/api/auth.js'
import { loadCertificate } from '../../src/api/cert.js'
import { BinaryResult, method, MethodRegistry } from '../../src/api/rpc.js'
import { startApiServer, type ApiServer } from '../../src/api/server.js'
import { generateToken, hashToken, TokenVerifier } from '../../src/api/token.js'
import { BackupProxyError } from '../../src/common/errors.js'
import { silentLogger } from '../../src/common/log.js'
import { useTempDir } from '../helpers/tmp.js'
import { XoJsonRpcError, XoProxyClient } from './xo-client.js'

const dir = useTempDir('bp-api-transport-')
let server: ApiServer
let client: XoProxyClient

beforeAll(async () => {
  const token = generateToken()
  const methods = new MethodRegistry()
  methods.addAll({
    'test.binary': method('bytes', z.object({}).strict(), () => new BinaryResult(Readable.from([Buffer.from('abc'), Buffer.from('def')]))),
    'test.range': method('numbers', z.object({ stop: z.number().int().max(1000) }).strict(), async function* ({ stop }) {
      for (let i = 0; i < stop; i++) yield await Promise.resolve(i)
    }),
    'test.failFirst': method('fails', z.object({}).strict(), async function* () {
      yield await Promise.reject(new BackupProxyError('E_REMOTE', 'the remote is gone'))
    }),
    'test.undefined': method('nothing', z.object({}).strict(), () => undefined),
  })
  server = await startApiServer({
    listen: '127.0.0.1:0',
    tls: await loadCertificate({ stateDir: dir() }),
    auth: createAuthenticator(new TokenVerifier(await hashToken(token)), new BadTokenThrottle(), silentLogger),
    methods,
    logger: silentLogger,
    maxBodyBytes: 1024 * 1024,
    keepAliveMs: 0,
  })
  client = new XoProxyClient(server.url, token)
})

afterAll(async () => {
  await server?.close()
})

describe('answer kinds', () => {
  it('streams a binary answer as application/octet-stream', async () => {
    const stream = (await client.call('test.binary', {}, { assertType: 'stream' })) as Readable
    const chunks: Buffer[] = []
    for await (const c of stream) chunks.push(c as Buffer)
    expect(Buffer.concat(chunks).toString()).toBe('abcdef')
    await expect(client.call('test.binary', {})).rejects.toThrow('expect the result to be scalar')
  })

  it('streams an iterator as NDJSON, and XO refuses it where a scalar is expected', async () => {
    expect(await client.collect('test.range', { stop: 5 })).toEqual([0, 1, 2, 3, 4])
    expect(await client.collect('test.range', { stop: 0 })).toEqual([])
    await expect(client.call('test.range', { stop: 3 })).rejects.toThrow('expect the result to be scalar')
  })

  it('answers an iterator failing before its first value with a JSON-RPC error carrying our code', async () => {
    const error = await client.call('test.failFirst', {}, { assertType: 'iterator' }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(XoJsonRpcError)
    expect(error).toMatchObject({ code: -32000, message: 'the remote is gone', data: { code: 'E_REMOTE' } })
  })

  it('answers true for a method that returns nothing (XO proxy)', async () => {
    expect(await client.call('test.undefined', {})).toBe(true)
  })
})

import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { rawGet, type RawResponse } from '../../src/xapi/raw-get.js'

/** A server answering each connection with `pieces`, written one by one (so the client reads them apart), then closing. */
async function serve(pieces: (string | Buffer)[], close = true): Promise<{ server: Server; url: URL; requests: string[] }> {
  const requests: string[] = []
  const server = createServer((socket: Socket) => {
    socket.setNoDelay(true)
    const answer = async (): Promise<void> => {
      for (const p of pieces) {
        await new Promise<void>((resolve) => socket.write(p, () => resolve()))
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      if (close) socket.end()
      else socket.destroy()
    }
    socket.once('data', (d) => {
      requests.push(d.toString('latin1'))
      void answer()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { server, url: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/export/?ref=x`), requests }
}

async function body(res: RawResponse): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const chunk of res as AsyncIterable<Buffer>) parts.push(chunk)
  return Buffer.concat(parts)
}

const servers: Server[] = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))))
})

async function get(pieces: (string | Buffer)[], close = true): Promise<{ res: RawResponse; data: Buffer; requests: string[] }> {
  const s = await serve(pieces, close)
  servers.push(s.server)
  const res = await rawGet(s.url, { headers: { Accept: 'application/octet-stream' }, allowUnauthorized: false })
  return { res, data: await body(res), requests: s.requests }
}

describe('rawGet', () => {
  it('decodes a chunked body whose framing is split across reads, and sends a GET with the path and query', async () => {
    const payload = Buffer.from('abcdefghijklmnopqrstuvwxyz0123456789')
    const { res, data, requests } = await get(['HTTP/1.1 200 OK\r\nTransfer-', 'Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n', 'a;ext=1\r\n', payload.subarray(0, 10), '\r', '\n1a\r\n', payload.subarray(10, 20), payload.subarray(20), '\r\n0\r\nX-Trailer: 1\r\n', '\r\n'])
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toBe('application/octet-stream')
    expect(data.equals(payload)).toBe(true)
    expect(res.complete).toBe(true)
    expect(requests[0]).toMatch(/^GET \/export\/\?ref=x HTTP\/1\.1\r\nHost: 127\.0\.0\.1:\d+\r\nAccept: application\/octet-stream\r\nConnection: close\r\n\r\n$/)
  })

  it('reads a body of Content-Length, and a body without length up to the close', async () => {
    const sized = await get(['HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel', 'lo'])
    expect(sized.data.toString()).toBe('hello')
    expect(sized.res.complete).toBe(true)
    const raw = await get(['HTTP/1.0 200 OK\r\n\r\nsome', ' bytes'])
    expect(raw.data.toString()).toBe('some bytes')
    expect(raw.res.complete).toBe(true)
  })

  it('ends a truncated body without complete (chunked or sized)', async () => {
    const chunked = await get(['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc'])
    expect(chunked.data.toString()).toBe('abc')
    expect(chunked.res.complete).toBe(false)
    const sized = await get(['HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc'])
    expect(sized.res.complete).toBe(false)
  })

  it('gives other statuses with their body, and refuses what is not HTTP', async () => {
    const notFound = await get(['HTTP/1.1 404 Not Found\r\nContent-Length: 22\r\n\r\n["HANDLE_INVALID","x"]'])
    expect(notFound.res.statusCode).toBe(404)
    expect(notFound.data.toString()).toBe('["HANDLE_INVALID","x"]')
    const s = await serve(['SSH-2.0-nope\r\n\r\n'])
    servers.push(s.server)
    await expect(rawGet(s.url, { headers: {}, allowUnauthorized: false })).rejects.toMatchObject({ code: 'E_HTTP_PROTOCOL' })
  })

  it('closes the connection when the signal aborts', async () => {
    const s = await serve(['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n'], false)
    servers.push(s.server)
    const ac = new AbortController()
    const res = await rawGet(s.url, { headers: {}, allowUnauthorized: false, signal: ac.signal })
    ac.abort(new Error('stop'))
    await expect(body(res)).rejects.toThrow('stop')
  })
})

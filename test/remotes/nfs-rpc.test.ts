/**
 * The ONC-RPC layer (src/remotes/nfs/rpc.ts) against a scripted TCP peer. Ganesha always answers in
 * one fragment, in order, and never with RPC-level errors for well-formed calls, so those paths of the
 * record-marking parser and the reply dispatcher cannot be reached with the real server; this peer
 * splits replies into several fragments, dribbles them a few bytes per TCP write, answers out of order,
 * and sends the RPC denials and errors a server may send.
 */
import { createServer, type Server, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RemoteError } from '../../src/common/errors.js'
import { RpcConnection } from '../../src/remotes/nfs/rpc.js'
import { XdrEncoder } from '@jsonjoy.com/json-pack/lib/xdr/XdrEncoder.js'

type Reply = (xid: number, proc: number, call: Buffer) => Buffer[]

/** A reply record body: xid, REPLY, then `rest` words. */
function words(...w: number[]): Buffer {
  const b = Buffer.alloc(w.length * 4)
  w.forEach((v, i) => b.writeUInt32BE(v >>> 0, i * 4))
  return b
}
const accepted = (xid: number, stat: number, ...results: number[]) => words(xid, 1, 0, 0, 0, stat, ...results)

/** Record-marks `body` into fragments of `fragmentBytes`. */
function frames(body: Buffer, fragmentBytes: number): Buffer {
  const parts: Buffer[] = []
  for (let at = 0; at < body.length || at === 0; at += fragmentBytes) {
    const piece = body.subarray(at, at + fragmentBytes)
    const last = at + fragmentBytes >= body.length
    parts.push(words((last ? 0x80000000 : 0) | piece.length), piece)
    if (last) break
  }
  return Buffer.concat(parts)
}

describe('ONC-RPC connection', () => {
  let server: Server
  let port = 0
  let reply: Reply = () => []
  const sockets = new Set<Socket>()
  beforeAll(async () => {
    server = createServer((socket) => {
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
      let buf = Buffer.alloc(0)
      socket.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d])
        for (;;) {
          if (buf.length < 4) return
          const len = buf.readUInt32BE(0) & 0x7fffffff
          if (buf.length < 4 + len) return
          const call = buf.subarray(4, 4 + len)
          buf = buf.subarray(4 + len)
          const out = reply(call.readUInt32BE(0), call.readUInt32BE(20), Buffer.from(call))
          // dribble: 3 bytes per write, so headers and bodies straddle TCP reads
          const all = Buffer.concat(out)
          for (let at = 0; at < all.length; at += 3) socket.write(all.subarray(at, at + 3))
        }
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    port = (server.address() as { port: number }).port
  })
  afterAll(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })

  const open = (callTimeoutMs = 5_000) =>
    RpcConnection.open({ host: '127.0.0.1', port, auth: { uid: 1000, gid: 1000, machineName: 'test' }, callTimeoutMs, connectTimeoutMs: 5_000, label: 'scripted peer' })

  it('reassembles multi-fragment records split across TCP reads, and matches replies by xid out of order', async () => {
    const held: { xid: number; proc: number }[] = []
    reply = (xid, proc) => {
      held.push({ xid, proc })
      if (held.length < 3) return []
      // answer the three calls in reverse order, each result as 5-byte fragments
      return held.reverse().map((h) => frames(accepted(h.xid, 0, h.proc * 11, 0xabcdef), 5))
    }
    const rpc = await open()
    const results = await Promise.all([1, 2, 3].map(async (proc) => (await rpc.call(100003, 3, proc, `proc ${proc}`, () => undefined)).u32()))
    expect(results).toEqual([11, 22, 33])
    rpc.close()
  })

  it('sends a payload after the arguments with XDR padding, in one record', async () => {
    const seen: Buffer[] = []
    reply = (xid, _proc, call) => {
      seen.push(call)
      return [frames(accepted(xid, 0), 1000)]
    }
    const rpc = await open()
    await rpc.call(100003, 3, 7, 'write', (w) => w.u32(5), [Buffer.from('abc'), Buffer.from('de')])
    await rpc.call(100003, 3, 8, 'next', (w) => w.u32(0xfeedface))
    expect(seen).toHaveLength(2) // the first record's length covered exactly the padded payload
    const first = seen[0]!
    expect(first.subarray(-12).toString('hex')).toBe(`00000005${Buffer.from('abcde').toString('hex')}000000`)
    expect(first.readUInt32BE(24)).toBe(1) // AUTH_SYS credentials
    expect(seen[1]!.readUInt32BE(seen[1]!.length - 4)).toBe(0xfeedface)
    rpc.close()
  })

  it('keeps frames intact when the encoder buffer has to grow (json-pack absolute-offset bug)', async () => {
    // XdrEncoder.writeStr remembers where its length word goes; if the Writer grows while the string is
    // written, that offset is stale. 2000 calls of ~300 bytes overflow the 256 KiB Writer several times.
    reply = (xid, _proc, call) => {
      const ok = call.readUInt32BE(call.length - 204) === 200 && call.subarray(-200).every((c) => c === 0x78)
      return [frames(accepted(xid, 0, ok ? 1 : 0), 1000)]
    }
    const rpc = await open()
    const name = 'x'.repeat(200)
    const results = await Promise.all(
      Array.from({ length: 2000 }, async () => (await rpc.call(100003, 3, 3, 'lookup', (w) => new XdrEncoder(w).writeStr(name))).u32()),
    )
    expect(results.filter((ok) => ok !== 1)).toHaveLength(0)
    rpc.close()
  })

  it('maps RPC denials and errors to RemoteErrors and keeps the connection usable', async () => {
    reply = (xid, proc) => {
      if (proc === 1) return [frames(words(xid, 1, 1, 1, 5), 100)] // MSG_DENIED AUTH_ERROR AUTH_TOOWEAK
      if (proc === 2) return [frames(accepted(xid, 1), 100)] // PROG_UNAVAIL
      return [frames(accepted(xid, 0, 42), 100)]
    }
    const rpc = await open()
    const denied = await rpc.call(100003, 3, 1, 'denied', () => undefined).catch((e: unknown) => e)
    expect(denied).toBeInstanceOf(RemoteError)
    expect((denied as RemoteError).code).toBe('EACCES')
    expect((denied as RemoteError).message).toMatch(/AUTH_TOOWEAK/)
    const unavailable = await rpc.call(100003, 3, 2, 'unavailable', () => undefined).catch((e: unknown) => e)
    expect((unavailable as RemoteError).code).toBe('EIO')
    expect((unavailable as RemoteError).message).toMatch(/PROG_UNAVAIL/)
    expect((await rpc.call(100003, 3, 3, 'fine', () => undefined)).u32()).toBe(42)
    expect(rpc.alive).toBe(true)
    rpc.close()
  })

  it('fails pending calls with ETIMEDOUT when no reply comes, then refuses new calls', async () => {
    reply = () => []
    const rpc = await open(200)
    const error = await rpc.call(100003, 3, 1, 'silent', () => undefined).catch((e: unknown) => e)
    expect((error as RemoteError).code).toBe('ETIMEDOUT')
    expect(rpc.alive).toBe(false)
    await expect(rpc.call(100003, 3, 1, 'after', () => undefined)).rejects.toBeInstanceOf(RemoteError)
  })

  it('fails pending calls with ECONNRESET when the peer closes', async () => {
    reply = () => {
      for (const s of sockets) s.destroy()
      return []
    }
    const rpc = await open()
    const error = await rpc.call(100003, 3, 1, 'dropped', () => undefined).catch((e: unknown) => e)
    expect((error as RemoteError).code).toBe('ECONNRESET')
  })
})

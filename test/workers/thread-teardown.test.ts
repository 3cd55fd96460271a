/**
 * A stream thread's opened remotes are closed when the pool tears the thread down, not dropped with its
 * sockets. A `mirror.copy` task copies a VHD (made by qemu-img) from a local remote to an SMB remote (a
 * private Samba), into a VhdDirectory, leasing the target from the thread's RemoteCache (as disk exports do);
 * the thread's RemoteCache keeps the SMB session open for the thread's next tasks. Between the client and
 * Samba sits a TCP relay that reads the SMB2 command of every request the client sends: after the task,
 * the session is still open (no LOGOFF on the wire); after `pool.close()`, the client sent
 * TREE_DISCONNECT then LOGOFF before its connection ended — the thread released its remote before
 * Piscina terminated it (a terminated thread's sockets just close: no LOGOFF would be seen).
 */
import { execFile } from 'node:child_process'
import { mkdir } from 'node:fs/promises'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { StreamPool } from '../../src/workers/pool.js'
import { waitFor } from '../helpers/ports.js'
import { makeTempDir } from '../helpers/tmp.js'
import { startSambaServer, type SambaServer } from '../services/smb.js'

const execFileAsync = promisify(execFile)
const SESSION_SETUP = 1
const LOGOFF = 2
const TREE_CONNECT = 3
const TREE_DISCONNECT = 4

/** What the relay saw a client send: SMB2 command codes, and 'end' when the client's connection ended. */
type WireEvent = number | 'end'

/** Reads the SMB2 commands of a client's stream: NetBIOS-framed messages, compounds followed by NextCommand. */
function commandReader(record: (command: number) => void): (chunk: Buffer) => void {
  let buffered = Buffer.alloc(0)
  return (chunk) => {
    buffered = Buffer.concat([buffered, chunk])
    while (buffered.length >= 4) {
      const length = buffered.readUInt32BE(0) & 0xffffff
      if (buffered.length < 4 + length) return
      const message = buffered.subarray(4, 4 + length)
      buffered = buffered.subarray(4 + length)
      for (let at = 0; at + 64 <= message.length; ) {
        if (message.readUInt32BE(at) !== 0xfe534d42) break // not an SMB2 header (negotiation of SMB1)
        record(message.readUInt16LE(at + 12))
        const next = message.readUInt32LE(at + 20)
        if (next === 0) break
        at += next
      }
    }
  }
}

/** A TCP relay to `port` recording what clients send. */
async function startRelay(port: number, events: WireEvent[]): Promise<{ server: Server; port: number }> {
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    const upstream = connect({ host: '127.0.0.1', port })
    sockets.add(client).add(upstream)
    const read = commandReader((command) => events.push(command))
    client.on('data', read)
    client.pipe(upstream).pipe(client)
    client.on('close', () => {
      events.push('end')
      upstream.destroy()
    })
    upstream.on('close', () => client.destroy())
    client.on('error', () => undefined)
    upstream.on('error', () => undefined)
  })
  server.on('close', () => {
    for (const s of sockets) s.destroy()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { server, port: (server.address() as { port: number }).port }
}

let samba: SambaServer
let relay: { server: Server; port: number }
let dir: { path: string; remove: () => Promise<void> }
const events: WireEvent[] = []

beforeAll(async () => {
  samba = await startSambaServer()
  relay = await startRelay(samba.port, events)
  dir = await makeTempDir('bp-teardown-')
  await mkdir(join(dir.path, 'source'))
  await execFileAsync('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', join(dir.path, 'source', 'a.vhd'), '4M'])
}, 120_000)

afterAll(async () => {
  relay?.server.close()
  await samba?.stop()
  await dir?.remove()
})

describe('stream thread teardown', () => {
  it('closing the pool logs the thread\'s cached SMB session off before the thread is terminated', async () => {
    const pool = new StreamPool({ threads: 1 })
    try {
      const copied = await pool.run('mirror.copy', {
        op: 'vhd',
        source: { url: `file://${join(dir.path, 'source')}`, options: {} },
        sourcePath: 'a.vhd',
        targets: [{ id: 'smb', url: samba.url, options: { smbPort: relay.port }, path: 'teardown/a.alias.vhd', directory: true, compression: 'none' }],
      })
      expect(copied.succeeded).toEqual(['smb'])
      // the task is over, its thread keeps the session for its next tasks
      expect(events).toContain(SESSION_SETUP)
      expect(events).toContain(TREE_CONNECT)
      expect(events).not.toContain(LOGOFF)
      expect(events).not.toContain('end')
    } finally {
      await pool.close()
    }
    await waitFor('the relay to see the client connection end', () => events.includes('end'), 30_000)
    const logoff = events.indexOf(LOGOFF)
    expect(events.indexOf(TREE_DISCONNECT)).toBeGreaterThan(-1)
    expect(logoff).toBeGreaterThan(events.indexOf(TREE_DISCONNECT))
    expect(events.indexOf('end')).toBeGreaterThan(logoff)
  }, 120_000)
})

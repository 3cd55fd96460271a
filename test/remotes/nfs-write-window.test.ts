/**
 * The NFS write window (src/remotes/nfs/write-window.ts) against a scripted NFS server model. A real
 * Ganesha cannot be made to change its write verifier without dropping the connection (which fails the
 * stream by design), so the verifier re-send logic is checked here against a model that keeps unstable
 * and stable bytes apart and loses the unstable ones when it "restarts" — the failure COMMIT exists for.
 */
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { RemoteError } from '../../src/common/errors.js'
import type { WriteResult } from '../../src/remotes/nfs/nfs3.js'
import { WriteWindow, type WindowIo } from '../../src/remotes/nfs/write-window.js'

/** A file on a server that buffers UNSTABLE writes until COMMIT, and may restart (losing them). */
class ModelServer implements WindowIo {
  stable = Buffer.alloc(0)
  unstable = new Map<number, Buffer>()
  verifier = 'v1'
  writes = 0
  inFlight = 0
  maxInFlight = 0
  /** called before each WRITE is answered (to restart the server at a chosen moment) */
  beforeReply: (n: number) => void = () => undefined
  fileSync = false

  restart(verifier: string): void {
    this.unstable.clear()
    this.verifier = verifier
  }

  async write(offset: number, data: readonly Uint8Array[], count: number): Promise<WriteResult> {
    this.inFlight++
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight)
    await new Promise((r) => setTimeout(r, 1))
    this.inFlight--
    const bytes = Buffer.concat(data)
    expect(bytes.length).toBe(count)
    this.beforeReply(++this.writes)
    if (this.fileSync) this.persist(offset, bytes)
    else this.unstable.set(offset, Buffer.from(bytes))
    return { count, committed: this.fileSync ? 2 : 0, verifier: this.verifier }
  }

  async commit(): Promise<string> {
    await new Promise((r) => setTimeout(r, 1))
    for (const [offset, bytes] of this.unstable) this.persist(offset, bytes)
    this.unstable.clear()
    return this.verifier
  }

  private persist(offset: number, bytes: Buffer): void {
    if (this.stable.length < offset + bytes.length) this.stable = Buffer.concat([this.stable, Buffer.alloc(offset + bytes.length - this.stable.length)])
    bytes.copy(this.stable, offset)
  }
}

async function writeAll(window: WriteWindow, data: Buffer, chunkBytes: number): Promise<void> {
  for (let at = 0; at < data.length; at += chunkBytes) {
    // reuse one buffer like a producer recycling its block: the window must have copied it
    const chunk = Buffer.from(data.subarray(at, at + chunkBytes))
    window.push(chunk)
    chunk.fill(0xee)
    await window.whenReady()
  }
  await window.finish()
}

const options = { window: 4, blockBytes: 64 * 1024, commitEveryBytes: 256 * 1024, label: 'model' }

describe('NFS write window', () => {
  it('writes every byte in order, with several WRITEs in flight, and commits them', async () => {
    const server = new ModelServer()
    const window = new WriteWindow(server, options)
    const data = randomBytes(1024 * 1024 + 12345)
    await writeAll(window, data, 50_000)
    expect(server.stable.equals(data)).toBe(true)
    expect(server.maxInFlight).toBeGreaterThan(1)
    expect(server.maxInFlight).toBeLessThanOrEqual(options.window)
    expect(window.resentBytes).toBe(0)
  })

  it('re-sends what the server lost when its verifier changes between WRITE and COMMIT', async () => {
    const server = new ModelServer()
    server.beforeReply = (n) => {
      if (n === 7) server.restart('v2') // loses every uncommitted block
    }
    const window = new WriteWindow(server, options)
    const data = randomBytes(2 * 1024 * 1024 + 3)
    await writeAll(window, data, 100_000)
    expect(window.resentBytes).toBeGreaterThan(0)
    expect(server.stable.equals(data)).toBe(true)
  })

  it('re-sends when the restart happens during the final COMMIT', async () => {
    const server = new ModelServer()
    const window = new WriteWindow(server, { ...options, commitEveryBytes: 100 * 1024 * 1024 })
    const commit = server.commit.bind(server)
    let commits = 0
    server.commit = async () => {
      if (++commits === 1) {
        server.restart('v9')
        return server.verifier
      }
      return commit()
    }
    const data = randomBytes(700_000)
    await writeAll(window, data, 65_536)
    expect(commits).toBe(2)
    expect(window.resentBytes).toBe(data.length)
    expect(server.stable.equals(data)).toBe(true)
  })

  it('fails with EIO when the verifier keeps changing', async () => {
    const server = new ModelServer()
    let v = 0
    server.beforeReply = () => server.restart(`v${++v}`)
    const window = new WriteWindow(server, { ...options, maxVerifierChanges: 2 })
    const error = await writeAll(window, randomBytes(1024 * 1024), 65_536).then(() => undefined, (e: unknown) => e)
    expect(error).toBeInstanceOf(RemoteError)
    expect((error as RemoteError).code).toBe('EIO')
    expect((error as RemoteError).message).toMatch(/verifier changed/)
  })

  it('releases FILE_SYNC writes at once (no COMMIT needed) and honours backpressure', async () => {
    const server = new ModelServer()
    server.fileSync = true
    const window = new WriteWindow(server, options)
    const data = randomBytes(4 * options.blockBytes * 3)
    window.push(data)
    expect(window.ready()).toBe(false) // 12 blocks pushed, window of 4
    await window.whenReady()
    await window.finish()
    expect(server.stable.equals(data)).toBe(true)
  })

  it('a failed WRITE fails the window and every later call', async () => {
    const server = new ModelServer()
    server.beforeReply = (n) => {
      if (n === 2) throw new RemoteError('ECONNRESET', 'connection lost')
    }
    const window = new WriteWindow(server, options)
    const error = await writeAll(window, randomBytes(1024 * 1024), 65_536).then(() => undefined, (e: unknown) => e)
    expect((error as RemoteError).code).toBe('ECONNRESET')
    expect(() => window.push(Buffer.alloc(1))).toThrow(/connection lost/)
  })
})

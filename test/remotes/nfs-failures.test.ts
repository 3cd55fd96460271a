/**
 * The NFS remote when the server dies: on its own Ganesha (not the run's shared one) so it can be
 * killed and restarted. A write in progress must fail with a connection error and publish nothing; the
 * next operation reconnects by itself, and the temporary the failed writer could not remove then is
 * removed on that new connection.
 */
import { randomBytes } from 'node:crypto'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Writable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RemoteError } from '../../src/common/errors.js'
import { NfsRemote } from '../../src/remotes/nfs/index.js'
import { parseRemoteUrl } from '../../src/remotes/url.js'
import type { NfsRemoteUrl } from '../../src/remotes/url-types.js'
import { startNFSDetailed, type NFSServiceDetails } from '../services/nfs.js'
import { expectCode } from './conformance.js'

const MiB = 1024 * 1024

async function writeAndWait(out: Writable, data: Buffer): Promise<Error | undefined> {
  return new Promise((resolve) => out.write(data, (e) => resolve(e ?? undefined)))
}

describe('nfs remote: server killed mid-write', { timeout: 120_000 }, () => {
  let server: NFSServiceDetails | undefined
  beforeAll(async () => {
    server = await startNFSDetailed()
  }, 120_000)
  afterAll(async () => {
    await server?.stop()
  }, 60_000)

  it('fails the stream, publishes nothing, reconnects later and removes the temporary then', async () => {
    const s = server!
    const remote = new NfsRemote(parseRemoteUrl(s.url) as NfsRemoteUrl, {}, { callTimeoutMs: 15_000 })
    await remote.open()
    await remote.writeFile('before.txt', 'still here')

    const out = await remote.createWriteStream('vm/killed.vhd')
    const errors: Error[] = []
    out.on('error', (e) => errors.push(e))
    expect(await writeAndWait(out, randomBytes(8 * MiB))).toBeUndefined()
    await s.kill()
    // keep writing: the connection is gone, so a write callback or end() must fail
    let failed: Error | undefined
    for (let i = 0; i < 64 && failed === undefined && errors.length === 0; i++) failed = await writeAndWait(out, randomBytes(MiB))
    if (failed === undefined && errors.length === 0) out.end()
    await new Promise<void>((resolve) => (out.closed ? resolve() : out.once('close', () => resolve())))
    const error = errors[0] ?? failed
    expect(error).toBeInstanceOf(RemoteError)
    expect((error as RemoteError).code).toBe('ECONNRESET')
    expect((error as RemoteError).message).toContain('vm/killed.vhd')

    // nothing published; the temporary is still on the server's disk (no connection to remove it)
    const onDisk = await readdir(join(s.exportDir, 'vm'))
    expect(onDisk).not.toContain('killed.vhd')
    expect(onDisk.filter((n) => /^\.killed\.vhd\.[0-9a-f]+\.tmp$/.test(n))).toHaveLength(1)

    // while the server is down, operations fail with a connection error instead of hanging
    await expectCode(remote.stat('before.txt'), 'ECONNRESET')

    await s.restart()
    // later operations reconnect by themselves
    expect((await remote.readFile('before.txt')).toString()).toBe('still here')
    // and the new connection removed the temporary
    expect(await remote.list('vm', { includeHidden: true })).toEqual([])
    expect(await readdir(join(s.exportDir, 'vm'))).toEqual([])
    await expectCode(remote.stat('vm/killed.vhd'), 'ENOENT')

    const data = randomBytes(3 * MiB + 1)
    await remote.writeFile('vm/after.vhd', data)
    expect((await remote.readFile('vm/after.vhd')).equals(data)).toBe(true)
    await remote.rmtree('vm')
    await remote.unlink('before.txt')
    await remote.close()
  })

  it('a server restarted while the remote is idle is reconnected to without an error', async () => {
    const s = server!
    const remote = new NfsRemote(parseRemoteUrl(s.url) as NfsRemoteUrl)
    await remote.writeFile('idle/a.txt', 'A')
    await s.kill()
    await s.restart()
    expect((await remote.readFile('idle/a.txt')).toString()).toBe('A')
    await remote.writeFile('idle/b.txt', 'B')
    expect((await remote.list('idle')).map((e) => e.path)).toEqual(['a.txt', 'b.txt'])
    await remote.rmtree('idle')
    await remote.close()
  })
})

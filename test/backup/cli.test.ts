/**
 * The user-facing commands through the real CLI entry (runCli): `demo` end to end (small), then
 * `verify` and `restore` on what it left, and their usage errors (exit 2).
 */
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from '../../src/cli/program.js'
import type { CliIo } from '../../src/cli/context.js'
import { makeTempDir } from '../helpers/tmp.js'
import { startRedis } from '../services/redis.js'
import { qemuCompare } from './helpers/fixture.js'

function io(): CliIo & { out: () => string } {
  let text = ''
  return { stdout: (t) => void (text += t), stderr: (t) => void (text += t), isTTY: false, out: () => text }
}

let dir: { path: string; remove: () => Promise<void> }
beforeAll(async () => {
  dir = await makeTempDir('bp-cli-')
})
afterAll(async () => {
  await dir?.remove()
})

describe('backup-proxy demo, verify, restore', () => {
  it('demo succeeds, leaves Redis as it found it, and verify/restore work on what it wrote', async () => {
    // a Redis of its own, holding some user data: after the demo, exactly the same keys
    const server = await startRedis()
    const redis = new Redis(server.url)
    let code: number
    const demoIo = io()
    const remoteDir = join(dir.path, 'remote')
    try {
      await redis.set('user:data', 'kept')
      await redis.hset('bull:{proxy.mine}:1', 'name', 'not the demo\'s')
      const before = (await redis.keys('*')).sort()
      code = await runCli(['demo', '--vms', '1', '--disk-size', '16MiB', '--dir', remoteDir, '--redis-url', server.url], demoIo)
      expect((await redis.keys('*')).sort()).toEqual(before)
    } finally {
      redis.disconnect()
      await server.destroy()
    }
    expect(code, demoIo.out()).toBe(0)
    expect(demoIo.out()).toMatch(/restore: .* identical to the source/)
    expect(demoIo.out()).toContain(`backups are in ${remoteDir}/xo-vm-backups`)

    const v = io()
    expect(await runCli(['verify', `file://${remoteDir}`, '--full'], v), v.out()).toBe(0)
    expect(v.out()).toMatch(/2 backup\(s\).*no problem found/s)

    const m = /--vm (\S+) --disk (\S+)/.exec(demoIo.out())!
    const r = io()
    const out = join(dir.path, 'disk.vhd')
    expect(await runCli(['restore', `file://${remoteDir}`, '--vm', m[1]!, '--disk', m[2]!, '--to', out], r), r.out()).toBe(0)
    const restoredRaw = (await readdir(join(remoteDir, 'restored')))[0]!
    await qemuCompare(out, join(remoteDir, 'restored', restoredRaw))
  })

  it('usage errors exit 2 with a message naming the argument', async () => {
    const a = io()
    expect(await runCli(['restore', 'file:///tmp', '--vm', '0f8b1e76-3c4a-4d1e-9a55-3b2a1c0d9e8f', '--disk', 'x', '--to', '/tmp/x.raw'], a)).toBe(2)
    expect(a.out()).toMatch(/--disk "x" is not a UUID/)
    const b = io()
    expect(await runCli(['restore', 'file:///tmp', '--vm', '0f8b1e76-3c4a-4d1e-9a55-3b2a1c0d9e8f', '--disk', '0f8b1e76-3c4a-4d1e-9a55-3b2a1c0d9e8f', '--to', '/tmp/x.qcow2'], b)).toBe(2)
    expect(b.out()).toMatch(/\.raw .*\.vhd/)
  })
})

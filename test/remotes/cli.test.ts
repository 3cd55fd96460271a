/** `backup-proxy remote test|ls` on a local remote and on Swift S3, exit codes and redaction. */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, inject, it } from 'vitest'
import type { CliIo } from '../../src/cli/context.js'
import { runCli } from '../../src/cli/program.js'
import { createRemote } from '../../src/remotes/index.js'
import { useTempDir } from '../helpers/tmp.js'

function io(): CliIo & { out: () => string; err: () => string } {
  let out = ''
  let err = ''
  return { stdout: (t) => (out += t), stderr: (t) => (err += t), isTTY: false, out: () => out, err: () => err }
}

const tmp = useTempDir('bp-remote-cli-')
const s3Url = inject('s3Url')

describe('backup-proxy remote', () => {
  it('tests and lists a local remote', async () => {
    const root = join(tmp(), 'r')
    await mkdir(join(root, 'xo-vm-backups', 'vm1'), { recursive: true })
    await writeFile(join(root, 'xo-vm-backups', 'vm1', 'a.json'), '{}')
    await writeFile(join(root, 'xo-vm-backups', '.b.json.x.tmp'), '')
    const o = io()
    expect(await runCli(['remote', 'test', `file://${root}`, '--size', '1MiB', '--json'], o)).toBe(0)
    const result = JSON.parse(o.out()) as { sizeBytes: number; writeMiBps: number }
    expect(result.sizeBytes).toBe(1024 * 1024)
    expect(result.writeMiBps).toBeGreaterThan(0)
    const l = io()
    expect(await runCli(['remote', 'ls', `file://${root}`, 'xo-vm-backups', '-r'], l)).toBe(0)
    expect(l.out()).toBe('vm1/a.json\n')
    const la = io()
    expect(await runCli(['remote', 'ls', `file://${root}`, 'xo-vm-backups', '--all'], la)).toBe(0)
    expect(la.out()).toBe('.b.json.x.tmp\nvm1/\n')
  })

  it('exits 2 on a bad URL and 1 on a failing remote, never printing the password', async () => {
    const o = io()
    expect(await runCli(['remote', 'ls', 's3://key:hunter2@host'], o)).toBe(2)
    expect(o.err()).toContain('E_REMOTE_URL')
    expect(o.err()).not.toContain('hunter2')
    const o2 = io()
    expect(await runCli(['remote', 'ls', `file://${tmp()}/missing`], o2)).toBe(1)
    expect(o2.err()).toContain('ENOENT')
  })

  it.skipIf(s3Url === null)('tests and lists an S3 remote without printing its secret', async () => {
    const url = `${(s3Url ?? '').replace(/#.*$/, '')}-cli`
    const remote = createRemote(url)
    await remote.writeFile('dir/x.bin', 'x')
    const o = io()
    expect(await runCli(['remote', 'test', url, '--size', '6MiB'], o)).toBe(0)
    expect(o.out()).toMatch(/write +[\d.]+ MiB\/s/)
    expect(o.out()).toContain(':***@')
    expect(o.out()).not.toContain('testing@')
    const l = io()
    expect(await runCli(['remote', 'ls', url, '--json'], l)).toBe(0)
    expect(JSON.parse(l.out())).toEqual([{ path: 'dir', isDirectory: true }])
    await remote.rmtree('dir')
    await remote.close()
  })
})

describe('encryption key on the command line: a file or the environment, never argv', () => {
  const key = 'cli-encryption-key-0123456789abc'
  const setup = async (name: string) => {
    const root = join(tmp(), name)
    await mkdir(root)
    const remote = createRemote(`file://${root}`, { encryptionKey: key })
    await remote.open()
    await remote.writeFile('xo-vm-backups/a.json', '{}')
    await remote.close()
    const keyFile = join(tmp(), `${name}.key`)
    await writeFile(keyFile, `${key}\n`, { mode: 0o600 })
    return { url: `file://${root}`, keyFile }
  }

  it('reads the key from --encryption-key-file or BACKUP_PROXY_ENCRYPTION_KEY (remote ls, remote test, verify)', async () => {
    const { url, keyFile } = await setup('enc-ok')
    const l = io()
    expect(await runCli(['remote', 'ls', url, '-r', '--encryption-key-file', keyFile], l)).toBe(0)
    expect(l.out()).toBe('xo-vm-backups/a.json\n')
    const t = io()
    expect(await runCli(['remote', 'test', url, '--size', '1MiB', '--encryption-key-file', keyFile], t)).toBe(0)
    expect(t.out()).toContain('(encrypted): OK')
    const v = io()
    expect(await runCli(['verify', url, '--encryption-key-file', keyFile], v)).toBe(0)
    expect(v.out()).toContain('no problem found')
    process.env.BACKUP_PROXY_ENCRYPTION_KEY = key
    try {
      const e = io()
      expect(await runCli(['remote', 'ls', url, '-r'], e)).toBe(0)
      expect(e.out()).toBe('xo-vm-backups/a.json\n')
    } finally {
      delete process.env.BACKUP_PROXY_ENCRYPTION_KEY
    }
  })

  it('refuses a key on argv (flag or URL) with exit 2, and a wrong key with E_ENCRYPTION, never printing a key', async () => {
    const { url } = await setup('enc-refused')
    for (const cmd of [['remote', 'ls', url], ['verify', url], ['restore', url, '--vm', '00000000-0000-4000-8000-000000000000', '--disk', '00000000-0000-4000-8000-000000000001', '--to', join(tmp(), 'x.raw')]]) {
      const o = io()
      expect(await runCli([...cmd, '--encryption-key', key], o)).toBe(2)
      expect(o.err()).toContain('E_USAGE')
      expect(o.err()).toContain('--encryption-key-file')
      expect(o.err()).not.toContain(key)
    }
    const inUrl = io()
    expect(await runCli(['remote', 'ls', `${url}?encryptionKey=${encodeURIComponent(JSON.stringify(key))}`], inUrl)).toBe(2)
    expect(inUrl.err()).toContain('E_USAGE')
    expect(inUrl.err()).not.toContain(key)
    const wrongKey = 'wrong-encryption-key-0123456789a'
    const wrongFile = join(tmp(), 'wrong.key')
    await writeFile(wrongFile, wrongKey)
    const w = io()
    expect(await runCli(['remote', 'ls', url, '--encryption-key-file', wrongFile], w)).toBe(1)
    expect(w.err()).toContain('E_ENCRYPTION')
    expect(w.err()).not.toContain(wrongKey)
    const missing = io()
    expect(await runCli(['remote', 'ls', url, '--encryption-key-file', join(tmp(), 'nope.key')], missing)).toBe(2)
  })
})

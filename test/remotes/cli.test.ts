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

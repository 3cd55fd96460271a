import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { runCli } from '../../src/cli/program.js'
import type { CliIo } from '../../src/cli/context.js'

function io(): CliIo & { out: () => string; err: () => string } {
  let out = ''
  let err = ''
  return { stdout: (t) => (out += t), stderr: (t) => (err += t), isTTY: false, out: () => out, err: () => err }
}

const SUBCOMMANDS = ['serve', 'backup', 'cancel', 'status', 'remote', 'verify', 'restore', 'xapi-sim', 'demo']

describe('backup-proxy command', () => {
  it('lists every subcommand in --help and exits 0', async () => {
    const o = io()
    expect(await runCli(['--help'], o)).toBe(0)
    for (const c of SUBCOMMANDS) expect(o.out()).toContain(c)
  })

  it.each(SUBCOMMANDS)('%s --help exits 0', async (cmd) => {
    const o = io()
    expect(await runCli([cmd, '--help'], o)).toBe(0)
    expect(o.out()).toContain(`Usage: backup-proxy ${cmd}`)
  })

  it('exits 2 naming the bad argument', async () => {
    const o = io()
    expect(await runCli(['serve', '--threads', 'many'], o)).toBe(2)
    expect(o.err()).toContain('--threads')
    const o2 = io()
    expect(await runCli(['nope'], o2)).toBe(2)
    expect(o2.err()).toContain("unknown command 'nope'")
    const o3 = io()
    expect(await runCli(['restore', 'file:///tmp/x'], o3)).toBe(2)
    expect(o3.err()).toContain('--vm')
  })

  it('exits 2 on invalid configuration, listing the key', async () => {
    const o = io()
    const before = process.env.BACKUP_PROXY_WORKERS_THREADS
    process.env.BACKUP_PROXY_WORKERS_THREADS = 'lots'
    try {
      // status loads the config first; an invalid one must stop it with exit code 2
      expect(await runCli(['status'], o)).toBe(2)
    } finally {
      if (before === undefined) delete process.env.BACKUP_PROXY_WORKERS_THREADS
      else process.env.BACKUP_PROXY_WORKERS_THREADS = before
    }
    expect(o.err()).toContain('workers.threads')
  })

  it('runs as a real process through bin/backup-proxy.js', async () => {
    const bin = new URL('../../bin/backup-proxy.js', import.meta.url).pathname
    const { stdout } = await promisify(execFile)(process.execPath, [bin, '--version'])
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+/)
    const failed = await promisify(execFile)(process.execPath, [bin, 'serve', '--threads', '0']).catch((e: unknown) => e as { code: number; stderr: string })
    expect(failed).toMatchObject({ code: 2 })
    expect((failed as { stderr: string }).stderr).toContain('--threads')
  })
})

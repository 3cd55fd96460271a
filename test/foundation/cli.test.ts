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

const SUBCOMMANDS = ['serve', 'backup', 'cancel', 'status', 'remote', 'verify', 'restore', 'xapi-sim', 'demo', 'jobs', 'job', 'backups']

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

  it('bare backup-proxy prints the help on stderr and exits 2', async () => {
    const o = io()
    expect(await runCli([], o)).toBe(2)
    expect(o.out()).toBe('')
    expect(o.err()).toContain('Usage: backup-proxy')
    expect(o.err()).toContain('[E_USAGE] no command given')
  })

  it('turns raw library errors into coded ones that say what to do', async () => {
    const { knownRawError } = await import('../../src/cli/program.js')
    const inUse = Object.assign(new Error('listen EADDRINUSE: address already in use 127.0.0.1:9464'), { code: 'EADDRINUSE' })
    expect(knownRawError(inUse)?.message).toMatch(/cannot listen on 127\.0\.0\.1:9464: .*--listen <host:port>/)
    expect(knownRawError(new Error('Connection is closed.'))).toMatchObject({ code: 'E_REDIS' })
    expect(knownRawError(new Error('WRONGTYPE Operation against a key holding the wrong kind of value'))?.message).toContain('redis.prefix')
    expect(knownRawError(new Error('something else'))).toBeUndefined()
  })

  it('help shows sizes human-readable', async () => {
    for (const cmd of ['demo', 'remote test']) {
      const o = io()
      expect(await runCli([...cmd.split(' '), '--help'], o)).toBe(0)
      expect(o.out()).toMatch(/\(default:\s+\d+(\.\d)?\s+MiB\)/)
    }
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

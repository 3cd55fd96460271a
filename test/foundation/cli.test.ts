import { execFile } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import module from 'node:module'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { commandWord, runCli } from '../../src/cli/program.js'
import { useTempDir } from '../helpers/tmp.js'
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

  it('finds the command an argument list names, past the global options and their values', () => {
    expect(commandWord(['status'])).toBe('status')
    expect(commandWord(['-c', 'status.yml', '--log-level', 'debug', 'jobs', '--state', 'failed'])).toBe('jobs')
    expect(commandWord(['--config=a.yml', '-V', 'job', 'show', 'x'])).toBe('job')
    expect(commandWord(['--help'])).toBeUndefined()
    expect(commandWord(['--', 'status'])).toBeUndefined()
    expect(commandWord([])).toBeUndefined()
  })

  it('a command run with only its own module prints what it prints with every command loaded', async () => {
    // `help status` names no command (it loads them all), `status --help` loads status alone
    for (const cmd of ['status', 'jobs', 'job']) {
      const all = io()
      const alone = io()
      expect(await runCli(['help', cmd], all)).toBe(0)
      expect(await runCli([cmd, '--help'], alone)).toBe(0)
      expect(alone.out()).toBe(all.out())
    }
    // a typo names no known command: every command is there for commander's suggestion
    const typo = io()
    expect(await runCli(['statuss'], typo)).toBe(2)
    expect(typo.err()).toContain('Did you mean status?')
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

  const cacheHome = useTempDir('bp-cli-cache-')
  const bin = new URL('../../bin/backup-proxy.js', import.meta.url).pathname
  const built = existsSync(new URL('../../dist/cli/main.js', import.meta.url))
  // Node 20 has no compile cache (test:node24 runs this file on Node 24); bin runs dist/ only when built
  const hasCompileCache = typeof (module as { enableCompileCache?: unknown }).enableCompileCache === 'function'
  it.skipIf(!built || !hasCompileCache)('keeps compiled modules in the per-user cache directory, unless NODE_DISABLE_COMPILE_CACHE', async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, XDG_CACHE_HOME: cacheHome() }
    delete env.NODE_COMPILE_CACHE
    await promisify(execFile)(process.execPath, [bin, '--help'], { env: { ...env, NODE_DISABLE_COMPILE_CACHE: '1' } })
    expect(existsSync(join(cacheHome(), 'backup-proxy'))).toBe(false)
    await promisify(execFile)(process.execPath, [bin, '--help'], { env })
    const dir = join(cacheHome(), 'backup-proxy', 'node-compile-cache')
    expect(readdirSync(dir, { recursive: true }).length).toBeGreaterThan(0)
  })
})

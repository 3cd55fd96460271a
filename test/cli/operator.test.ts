/**
 * The operator's commands through the real CLI entry (runCli) against a real proxy (ProxyRuntime with
 * the builtin processors), the XAPI simulator and a local remote, on the shared Redis under a prefix of
 * their own: `backup` (fail fast without a live proxy, secrets from files, VMs by name, plain progress
 * lines, human summary, `--json`), `jobs` and `job show|logs`, `backups ls`, `restore --at` with what
 * `backups ls` printed and `latest`, and an encrypted remote without its key (E_ENCRYPTION, not problems).
 */
import { execFile } from 'node:child_process'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { runCli } from '../../src/cli/program.js'
import { createRemote } from '../../src/remotes/index.js'
import { MiB } from '../backup/helpers/fixture.js'
import { captureIo, useLiveProxy } from './helpers/live-proxy.js'

const live = useLiveProxy({ name: 'cli', vms: 2 })
const { proxyId } = live
let restoreArgs: string[] = []

describe('backup, jobs, job show, backups ls, restore', () => {
  it('fails fast with E_NO_PROXY when no live proxy serves the queue, and refuses --task with --vm', async () => {
    const passwordFile = join(live.dir, 'xapi.pw')
    await writeFile(passwordFile, `${live.sim.password}\n`)
    const o = captureIo()
    const code = await runCli(['backup', '--proxy', 'no-such-proxy', '--xapi', `${live.sim.url.replace('://', `://${live.sim.user}@`)}`, '--xapi-password-file', passwordFile, '--vm', 'sim-vm-0', '--remote', `file://${live.dir}/r0`], o)
    expect(code).toBe(1)
    expect(o.err()).toContain('E_NO_PROXY')
    expect(o.err()).toContain('{proxy.no-such-proxy}')
    expect(o.err()).toContain('--allow-no-proxy')
    const t = captureIo()
    await writeFile(join(live.dir, 'task.json'), '{}')
    expect(await runCli(['backup', '--proxy', proxyId, '--task', join(live.dir, 'task.json'), '--vm', 'x'], t)).toBe(2)
    expect(t.err()).toMatch(/\[E_USAGE\] --task <file> carries the whole task: --vm would be ignored/)
  })

  it('backs up VMs named on the command line with the password from a file, plain progress and a readable summary; lists, shows and restores them', async () => {
    const remote = join(live.dir, 'r1')
    await mkdir(remote)
    const passwordFile = join(live.dir, 'xapi.pw')
    await writeFile(passwordFile, `${live.sim.password}\n`)
    const xapi = live.sim.url.replace('://', `://${live.sim.user}@`)
    const b = captureIo()
    const code = await runCli(['backup', '--proxy', proxyId, '--xapi', xapi, '--xapi-password-file', passwordFile, '--vm', 'sim-vm-0', '--vm', 'sim-vm-1', '--remote', `file://${remote}`, '--job-id', 'nightly'], b)
    expect(code, b.err()).toBe(0)
    // no carriage return off a terminal; the events name the VMs; the summary is a tree and an outcome line
    expect(b.err()).not.toContain('\r')
    expect(b.err()).toMatch(/^backup: \d+%/m)
    expect(b.err()).toMatch(/start {2}VM sim-vm-\d+ \([0-9a-f-]{36}\): snapshot/)
    expect(b.out()).toMatch(/^ok {2}backup\.run {2}8\.0 MiB/)
    expect(b.out()).toMatch(/job run\.nightly\.cli\.\S+: success, in .*, 2\/2 VM\(s\)/)
    expect(b.out() + b.err()).not.toContain(live.sim.password)
    const jobId = /job (run\.nightly\.cli\.\S+):/.exec(b.out())![1]!

    const j = captureIo()
    expect(await runCli(['jobs', '--job', 'nightly', '--json'], j)).toBe(0)
    const rows = JSON.parse(j.out()) as { id: string; status: string; job: { id: string }; ranBy: string }[]
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ id: jobId, status: 'success', job: { id: 'nightly' } })
    expect(rows[0]!.ranBy.startsWith(`${proxyId}@`)).toBe(true)
    const jt = captureIo()
    expect(await runCli(['jobs', '--state', 'failure', '--proxy', proxyId], jt)).toBe(0)
    expect(jt.out()).toBe('no job\n')
    const s = captureIo()
    expect(await runCli(['job', 'show', jobId], s)).toBe(0)
    expect(s.out()).toContain(`job ${jobId} (backup.run) in {proxy.${proxyId}}: success`)
    expect(s.out()).toMatch(/ok {2}transfer {2}\d/)
    const l = captureIo()
    expect(await runCli(['job', 'logs', jobId, '--json'], l)).toBe(0)
    expect(l.out().trim().split('\n').map((x) => (JSON.parse(x) as { event: string }).event)).toContain('end')

    const ls = captureIo()
    expect(await runCli(['backups', 'ls', `file://${remote}`, '--vm', 'sim-vm-1', '--json'], ls)).toBe(0)
    const backups = JSON.parse(ls.out()) as { vm: { name: string; uuid: string }; timestamp: string; mode: string; chainLength: number; encrypted: boolean; sizeBytes: number }[]
    expect(backups).toHaveLength(1)
    expect(backups[0]).toMatchObject({ vm: { name: 'sim-vm-1' }, mode: 'delta', chainLength: 1, encrypted: false })
    expect(backups[0]!.sizeBytes).toBeGreaterThan(0)
    const table = captureIo()
    expect(await runCli(['backups', 'ls', `file://${remote}`], table)).toBe(0)
    expect(table.out()).toMatch(/^VM +UUID +TIMESTAMP +TIME +MODE +SIZE +CHAIN/)
    expect(table.out()).toContain('2 backup(s)')

    restoreArgs = ['restore', `file://${remote}`, '--vm', 'sim-vm-1', '--disk', '']
    const vdi = live.sim.listVms().find((v) => v.nameLabel === 'sim-vm-1')!.vdis[0]!.uuid
    for (const at of [backups[0]!.timestamp, 'latest']) {
      const r = captureIo()
      const to = join(live.dir, `restored-${at}.raw`)
      expect(await runCli(['restore', `file://${remote}`, '--vm', 'sim-vm-1', '--at', at, '--disk', vdi, '--to', to], r), r.err()).toBe(0)
      expect(r.out()).toContain(`at ${backups[0]!.timestamp}`)
      expect((await readFile(to)).length).toBe(8 * MiB)
    }
    restoreArgs[5] = vdi
  })

  it('draws a progress bar on a terminal (a pseudo-terminal from util-linux script), plain lines without one', async () => {
    const bin = new URL('../../bin/backup-proxy.js', import.meta.url).pathname
    const to = join(live.dir, 'tty.raw')
    const command = [process.execPath, bin, ...restoreArgs, '--to', to].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ')
    // script gives the command a pseudo-terminal: stdout and stderr are TTYs, its output is what a user sees
    const { stdout } = await promisify(execFile)('script', ['-q', '-e', '-c', command, '/dev/null'], { env: { ...process.env, TERM: 'xterm' } })
    // each redraw goes back to the start of the line and clears it (CR, ESC [K)
    expect(stdout).toContain('\r\u001b[Krestore [')
    expect(stdout).toMatch(/restore \[#*-*\] +\d+%/)
    expect(stdout).toMatch(/restore \[#{24}\] 100% 8\.0 MiB\/8\.0 MiB/)
    expect(stdout).toContain(`restored disk ${restoreArgs[5]}`)
    const plain = captureIo()
    expect(await runCli([...restoreArgs, '--to', join(live.dir, 'plain.raw')], plain)).toBe(0)
    expect(plain.err()).not.toContain('\r')
    expect(plain.err()).toMatch(/^restore: 100% 8\.0 MiB\/8\.0 MiB/m)
    const json = captureIo()
    expect(await runCli([...restoreArgs, '--to', join(live.dir, 'json.raw'), '--json'], json)).toBe(0)
    expect(json.err()).toBe('')
    expect(JSON.parse(json.out())).toMatchObject({ disk: restoreArgs[5], writtenBytes: 8 * MiB })
  })

  it('refuses an encrypted remote opened without its key (E_ENCRYPTION), and reads it with the key from the environment', async () => {
    const root = join(live.dir, 'enc')
    await mkdir(root)
    const key = 'operator-test-encryption-key-012'
    const remote = createRemote(`file://${root}`, { encryptionKey: key })
    await remote.open()
    await remote.close()
    for (const args of [['verify', `file://${root}`], ['backups', 'ls', `file://${root}`]]) {
      const o = captureIo()
      expect(await runCli(args, o)).toBe(1)
      expect(o.err()).toContain('E_ENCRYPTION')
      expect(o.out()).not.toContain('ORPHAN')
    }
    process.env.BACKUP_PROXY_ENCRYPTION_KEY = key
    try {
      const v = captureIo()
      expect(await runCli(['verify', `file://${root}`], v)).toBe(0)
      expect(v.out()).toContain('no problem found')
    } finally {
      delete process.env.BACKUP_PROXY_ENCRYPTION_KEY
    }
  })
})

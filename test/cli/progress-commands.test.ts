/**
 * The long commands' output through the real CLI against a real proxy (ProxyRuntime, builtin processors),
 * the XAPI simulator and local remotes: `mirror` in a pseudo-terminal (util-linux `script`) draws a bar
 * redrawn in place; without a terminal it prints plain lines, the task tree and an outcome line, or with
 * `--json` the summary alone; `backup` and `verify --full` draw their bar in a pseudo-terminal too.
 */
import { execFile } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { runCli } from '../../src/cli/program.js'
import { captureIo, useLiveProxy } from './helpers/live-proxy.js'

const live = useLiveProxy({ name: 'progress', vms: 2 })
const { proxyId } = live
const bin = new URL('../../bin/backup-proxy.js', import.meta.url).pathname

/** The CLI run in a pseudo-terminal: stdout and stderr are TTYs; returns what a user sees. */
async function inTerminal(args: string[], env: Record<string, string> = {}): Promise<string> {
  const command = [process.execPath, bin, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ')
  const { stdout } = await promisify(execFile)('script', ['-q', '-e', '-c', command, '/dev/null'], { env: { ...process.env, ...env, TERM: 'xterm' } })
  return stdout
}

async function backupTo(remote: string, terminal: boolean): Promise<string> {
  await mkdir(remote, { recursive: true })
  const args = ['backup', '--proxy', proxyId, '--xapi', live.sim.url.replace('://', `://${live.sim.user}@`), '--vm', 'sim-vm-0', '--vm', 'sim-vm-1', '--remote', `file://${remote}`, '--job-id', 'src']
  if (terminal) return inTerminal(args, { BACKUP_PROXY_XAPI_PASSWORD: live.sim.password })
  const passwordFile = join(live.dir, 'xapi.pw')
  await writeFile(passwordFile, `${live.sim.password}\n`)
  const o = captureIo()
  expect(await runCli([...args, '--xapi-password-file', passwordFile], o), o.err()).toBe(0)
  return o.out()
}

async function backupCount(remote: string): Promise<number> {
  const o = captureIo()
  expect(await runCli(['backups', 'ls', `file://${remote}`, '--json'], o), o.err()).toBe(0)
  return (JSON.parse(o.out()) as unknown[]).length
}

describe('progress and summaries of mirror, backup and verify', () => {
  it('backup and verify --full draw a bar in a pseudo-terminal', async () => {
    const remote = join(live.dir, 'tty-src')
    const out = await backupTo(remote, true)
    expect(out).toContain('\r\u001b[Kbackup [')
    expect(out).toMatch(/backup \[#{24}\] 100%/)
    expect(out).toMatch(/job run\.src\.cli\.\S+: success/)
    const v = await inTerminal(['verify', `file://${remote}`, '--full'])
    expect(v).toContain('\r\u001b[Kverify [')
    expect(v).toMatch(/verify \[#{24}\] 100%/)
    expect(v).toContain('no problem found')
  })

  it('mirror: a bar in a pseudo-terminal; plain lines, task tree and outcome without one; --json the summary alone', async () => {
    const source = join(live.dir, 'src')
    await backupTo(source, false)
    expect(await backupCount(source)).toBe(2)

    const ttyTarget = join(live.dir, 'm-tty')
    await mkdir(ttyTarget)
    const tty = await inTerminal(['mirror', '--proxy', proxyId, '--source', `file://${source}`, '--remote', `file://${ttyTarget}`, '--job-id', 'mtty'])
    expect(tty).toContain('\r\u001b[Kmirror [')
    expect(tty).toMatch(/mirror \[#{24}\] 100%/)
    expect(tty).toMatch(/^job \S+: success, in /m)
    expect(await backupCount(ttyTarget)).toBe(2)

    const plainTarget = join(live.dir, 'm-plain')
    await mkdir(plainTarget)
    const plain = captureIo()
    expect(await runCli(['mirror', '--proxy', proxyId, '--source', `file://${source}`, '--remote', `file://${plainTarget}`, '--job-id', 'mplain'], plain), plain.err()).toBe(0)
    expect(plain.err()).not.toContain('\r')
    expect(plain.err()).toMatch(/^enqueued job \S+ in \{proxy\./m)
    expect(plain.err()).toMatch(/^mirror: 100%/m)
    // a human summary: the task tree, then the outcome line; no JSON
    expect(plain.out()).toMatch(/^ok {2}/m)
    expect(plain.out()).toMatch(/^job \S+: success, in /m)
    expect(plain.out().trimStart().startsWith('{')).toBe(false)
    expect(await backupCount(plainTarget)).toBe(2)

    const jsonTarget = join(live.dir, 'm-json')
    await mkdir(jsonTarget)
    const json = captureIo()
    expect(await runCli(['mirror', '--proxy', proxyId, '--source', `file://${source}`, '--remote', `file://${jsonTarget}`, '--job-id', 'mjson', '--json'], json), json.err()).toBe(0)
    expect(json.err()).not.toMatch(/^mirror: /m)
    const summary = JSON.parse(json.out()) as { status: string; jobId: string }
    expect(summary.status).toBe('success')
    expect(json.err()).toContain(`enqueued job ${summary.jobId}`)
    expect(await backupCount(jsonTarget)).toBe(2)

    const none = captureIo()
    expect(await runCli(['mirror', '--proxy', 'no-such-proxy', '--source', `file://${source}`, '--remote', `file://${jsonTarget}`], none)).toBe(1)
    expect(none.err()).toContain('E_NO_PROXY')
  })
})

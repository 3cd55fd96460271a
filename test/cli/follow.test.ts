/**
 * `backup-proxy job follow <id>` on real jobs: a backup enqueued with `--no-wait` through the CLI, run by
 * a real proxy (ProxyRuntime, builtin processors) against the XAPI simulator on the shared Redis under a
 * prefix of its own. Following it prints the job's progress and its task-log lines (naming the VM and
 * the remote) on stderr, the tree and the outcome on stdout, and exits with the job's outcome: 0 for a
 * success, 1 with the real cause (the XAPI login refused) for a failure.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runCli } from '../../src/cli/program.js'
import { captureIo, useLiveProxy } from './helpers/live-proxy.js'

const live = useLiveProxy({ name: 'follow', vms: 1 })
const { proxyId } = live

/** Enqueues a backup of sim-vm-0 with --no-wait and returns its job id. */
async function enqueue(password: string, remote: string): Promise<string> {
  const passwordFile = join(live.dir, `xapi-${randomBytes(3).toString('hex')}.pw`)
  await writeFile(passwordFile, `${password}\n`)
  const o = captureIo()
  const args = ['backup', '--proxy', proxyId, '--xapi', live.sim.url.replace('://', `://${live.sim.user}@`), '--xapi-password-file', passwordFile, '--vm', 'sim-vm-0', '--remote', `file://${remote}`, '--no-wait', '--json']
  expect(await runCli(args, o), o.err()).toBe(0)
  return (JSON.parse(o.out()) as { jobId: string }).jobId
}

describe('job follow', () => {
  it('follows a backup to its end: progress, task-log lines naming the VM and the remote, the tree, exit 0', async () => {
    const remote = join(live.dir, 'r-ok')
    await mkdir(remote)
    const jobId = await enqueue(live.sim.password, remote)
    const vm = live.sim.listVms().find((v) => v.nameLabel === 'sim-vm-0')!
    const f = captureIo()
    expect(await runCli(['job', 'follow', jobId], f), f.err()).toBe(0)
    const err = f.err()
    expect(err).toContain(`following job ${jobId} in {proxy.${proxyId}}`)
    // every event, whether seen live or replayed from the job log when the job was quicker than us
    expect(err).toMatch(/^\d\d:\d\d:\d\d start {2}backup\.run$/m)
    expect(err).toContain(`start  VM sim-vm-0 (${vm.uuid})`)
    expect(err).toContain(`start  VM sim-vm-0 (${vm.uuid}): snapshot`)
    // the remote's URL is sealed in the job: its id names it
    expect(err).toMatch(new RegExp(`start {2}VM sim-vm-0 \\(${vm.uuid}\\): export to remote cli-[0-9a-f]{12} \\(full\\)`))
    expect(err).not.toContain('bpseal')
    expect(err).toMatch(new RegExp(`ok {2}VM sim-vm-0 \\(${vm.uuid}\\) → remote cli-[0-9a-f]{12}: transfer {2}\\d`))
    // the progress, plain (no terminal), ends at 100%
    expect(err).not.toContain('\r')
    expect(err).toMatch(new RegExp(`^${jobId.replace(/\./g, '\\.')}: 100%`, 'm'))
    expect(f.out()).toMatch(new RegExp(`^ {4}ok {2}VM sim-vm-0 \\(${vm.uuid}\\)`, 'm'))
    expect(f.out()).toContain(`job ${jobId}: success`)
    expect(f.out() + err).not.toContain(live.sim.password)

    const json = captureIo()
    expect(await runCli(['job', 'follow', jobId, '--json'], json)).toBe(0)
    expect(JSON.parse(json.out())).toMatchObject({ jobId, status: 'success' })
  })

  it('follows a failing backup: exit 1 with the real cause (XAPI login refused) and its fix', async () => {
    const remote = join(live.dir, 'r-fail')
    await mkdir(remote)
    const jobId = await enqueue('not-the-password', remote)
    const f = captureIo()
    expect(await runCli(['job', 'follow', jobId], f)).toBe(1)
    expect(f.out()).toContain(`job ${jobId}: failure`)
    expect(f.err()).toMatch(new RegExp(`\\[E_BACKUP\\] job ${jobId.replace(/\./g, '\\.')} ended failure: .*SESSION_AUTHENTICATION_FAILED`))
    expect(f.err()).toContain(`backup-proxy job show ${jobId}`)
    expect(f.out() + f.err()).not.toContain('not-the-password')
  })

  it('an unknown job id is a usage error (exit 2) naming where it looked', async () => {
    const f = captureIo()
    expect(await runCli(['job', 'follow', 'no-such-job', '--proxy', proxyId], f)).toBe(2)
    expect(f.err()).toContain(`job no-such-job not found in {proxy.${proxyId}}`)
  })
})

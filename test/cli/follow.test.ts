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
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { runCli } from '../../src/cli/program.js'
import type { CliIo } from '../../src/cli/context.js'
import { silentLogger } from '../../src/common/log.js'
import { compileConfig } from '../../src/config/index.js'
import { SealKey } from '../../src/queue/seal.js'
import { builtinProcessors } from '../../src/workers/builtin-processors.js'
import { ProxyRuntime } from '../../src/workers/proxy.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { startSim, MiB } from '../backup/helpers/fixture.js'
import { proxyConfig } from '../backup/helpers/proxy-config.js'

const redisUrl = inject('redisUrl')
const prefix = `bp-follow-${randomBytes(4).toString('hex')}`
const proxyId = `follow-${randomBytes(3).toString('hex')}`
const sealText = SealKey.generate().export()
const ENV = { REDIS_URL: redisUrl, BACKUP_PROXY_REDIS_PREFIX: prefix, BACKUP_PROXY_SECURITY_SEAL_KEY: sealText, BACKUP_PROXY_LOG_LEVEL: 'silent' }
const saved = new Map<string, string | undefined>()
let sim: XapiSimulator
let proxy: ProxyRuntime
let dir: { path: string; remove: () => Promise<void> }

function io(): CliIo & { out: () => string; err: () => string } {
  let out = ''
  let err = ''
  return { stdout: (t) => void (out += t), stderr: (t) => void (err += t), isTTY: false, out: () => out, err: () => err }
}

beforeAll(async () => {
  for (const [k, v] of Object.entries(ENV)) {
    saved.set(k, process.env[k])
    process.env[k] = v
  }
  dir = await makeTempDir('bp-cli-follow-')
  sim = await startSim({ vms: 1, diskSizeBytes: 8 * MiB })
  const raw = proxyConfig(redisUrl, sealText, proxyId)
  proxy = new ProxyRuntime({ config: compileConfig({ ...raw, redis: { url: redisUrl, prefix } }), processors: builtinProcessors({ standIns: false }), sealKey: SealKey.fromString(sealText), logger: silentLogger })
  await proxy.start()
})

afterAll(async () => {
  await proxy?.shutdown()
  await sim?.close()
  await dir?.remove()
  // leave the shared Redis as we found it: every key under our prefix
  const redis = new Redis(redisUrl)
  const keys = await redis.keys(`${prefix}:*`)
  if (keys.length > 0) await redis.del(...keys)
  await redis.quit()
  for (const [k, v] of saved) {
    if (v === undefined) delete process.env[k]
    else process.env[k] = v
  }
})

/** Enqueues a backup of sim-vm-0 with --no-wait and returns its job id. */
async function enqueue(password: string, remote: string): Promise<string> {
  const passwordFile = join(dir.path, `xapi-${randomBytes(3).toString('hex')}.pw`)
  await writeFile(passwordFile, `${password}\n`)
  const o = io()
  const args = ['backup', '--proxy', proxyId, '--xapi', sim.url.replace('://', `://${sim.user}@`), '--xapi-password-file', passwordFile, '--vm', 'sim-vm-0', '--remote', `file://${remote}`, '--no-wait', '--json']
  expect(await runCli(args, o), o.err()).toBe(0)
  return (JSON.parse(o.out()) as { jobId: string }).jobId
}

describe('job follow', () => {
  it('follows a backup to its end: progress, task-log lines naming the VM and the remote, the tree, exit 0', async () => {
    const remote = join(dir.path, 'r-ok')
    await mkdir(remote)
    const jobId = await enqueue(sim.password, remote)
    const vm = sim.listVms().find((v) => v.nameLabel === 'sim-vm-0')!
    const f = io()
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
    expect(f.out() + err).not.toContain(sim.password)

    const json = io()
    expect(await runCli(['job', 'follow', jobId, '--json'], json)).toBe(0)
    expect(JSON.parse(json.out())).toMatchObject({ jobId, status: 'success' })
  })

  it('follows a failing backup: exit 1 with the real cause (XAPI login refused) and its fix', async () => {
    const remote = join(dir.path, 'r-fail')
    await mkdir(remote)
    const jobId = await enqueue('not-the-password', remote)
    const f = io()
    expect(await runCli(['job', 'follow', jobId], f)).toBe(1)
    expect(f.out()).toContain(`job ${jobId}: failure`)
    expect(f.err()).toMatch(new RegExp(`\\[E_BACKUP\\] job ${jobId.replace(/\./g, '\\.')} ended failure: .*SESSION_AUTHENTICATION_FAILED`))
    expect(f.err()).toContain(`backup-proxy job show ${jobId}`)
    expect(f.out() + f.err()).not.toContain('not-the-password')
  })

  it('an unknown job id is a usage error (exit 2) naming where it looked', async () => {
    const f = io()
    expect(await runCli(['job', 'follow', 'no-such-job', '--proxy', proxyId], f)).toBe(2)
    expect(f.err()).toContain(`job no-such-job not found in {proxy.${proxyId}}`)
  })
})

/**
 * The operator's commands through the real CLI entry (runCli) against a real proxy (ProxyRuntime with
 * the builtin processors), the XAPI simulator and a local remote, on the shared Redis under a prefix of
 * their own: `backup` (fail fast without a live proxy, secrets from files, VMs by name, plain progress
 * lines, human summary, `--json`), `jobs` and `job show|logs`, `backups ls`, `restore --at` with what
 * `backups ls` printed and `latest`, and an encrypted remote without its key (E_ENCRYPTION, not problems).
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { runCli } from '../../src/cli/program.js'
import type { CliIo } from '../../src/cli/context.js'
import { silentLogger } from '../../src/common/log.js'
import { compileConfig } from '../../src/config/index.js'
import { SealKey } from '../../src/queue/seal.js'
import { createRemote } from '../../src/remotes/index.js'
import { builtinProcessors } from '../../src/workers/builtin-processors.js'
import { ProxyRuntime } from '../../src/workers/proxy.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { startSim, MiB } from '../backup/helpers/fixture.js'
import { proxyConfig } from '../backup/helpers/proxy-config.js'

const redisUrl = inject('redisUrl')
const prefix = `bp-cli-${randomBytes(4).toString('hex')}`
const proxyId = `cli-${randomBytes(3).toString('hex')}`
const sealText = SealKey.generate().export()
const ENV = { REDIS_URL: redisUrl, BACKUP_PROXY_REDIS_PREFIX: prefix, BACKUP_PROXY_SECURITY_SEAL_KEY: sealText, BACKUP_PROXY_LOG_LEVEL: 'silent' }
const saved = new Map<string, string | undefined>()
let sim: XapiSimulator
let proxy: ProxyRuntime
let dir: { path: string; remove: () => Promise<void> }
/** `restore` of the disk of sim-vm-1 the backup test made (its VDI uuid last) */
let restoreArgs: string[] = []

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
  dir = await makeTempDir('bp-cli-op-')
  sim = await startSim({ vms: 2, diskSizeBytes: 8 * MiB })
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

describe('backup, jobs, job show, backups ls, restore', () => {
  it('fails fast with E_NO_PROXY when no live proxy serves the queue, and refuses --task with --vm', async () => {
    const passwordFile = join(dir.path, 'xapi.pw')
    await writeFile(passwordFile, `${sim.password}\n`)
    const o = io()
    const code = await runCli(['backup', '--proxy', 'no-such-proxy', '--xapi', `${sim.url.replace('://', `://${sim.user}@`)}`, '--xapi-password-file', passwordFile, '--vm', 'sim-vm-0', '--remote', `file://${dir.path}/r0`], o)
    expect(code).toBe(1)
    expect(o.err()).toContain('E_NO_PROXY')
    expect(o.err()).toContain('{proxy.no-such-proxy}')
    expect(o.err()).toContain('--allow-no-proxy')
    const t = io()
    await writeFile(join(dir.path, 'task.json'), '{}')
    expect(await runCli(['backup', '--proxy', proxyId, '--task', join(dir.path, 'task.json'), '--vm', 'x'], t)).toBe(2)
    expect(t.err()).toMatch(/\[E_USAGE\] --task <file> carries the whole task: --vm would be ignored/)
  })

  it('backs up VMs named on the command line with the password from a file, plain progress and a readable summary; lists, shows and restores them', async () => {
    const remote = join(dir.path, 'r1')
    await mkdir(remote)
    const passwordFile = join(dir.path, 'xapi.pw')
    await writeFile(passwordFile, `${sim.password}\n`)
    const xapi = sim.url.replace('://', `://${sim.user}@`)
    const b = io()
    const code = await runCli(['backup', '--proxy', proxyId, '--xapi', xapi, '--xapi-password-file', passwordFile, '--vm', 'sim-vm-0', '--vm', 'sim-vm-1', '--remote', `file://${remote}`, '--job-id', 'nightly'], b)
    expect(code, b.err()).toBe(0)
    // no carriage return off a terminal; the events name the VMs; the summary is a tree and an outcome line
    expect(b.err()).not.toContain('\r')
    expect(b.err()).toMatch(/^backup: \d+%/m)
    expect(b.err()).toMatch(/start {2}VM sim-vm-\d+ \([0-9a-f-]{36}\): snapshot/)
    expect(b.out()).toMatch(/^ok {2}backup\.run {2}8\.0 MiB/)
    expect(b.out()).toMatch(/job run\.nightly\.cli\.\S+: success, in .*, 2\/2 VM\(s\)/)
    expect(b.out() + b.err()).not.toContain(sim.password)
    const jobId = /job (run\.nightly\.cli\.\S+):/.exec(b.out())![1]!

    const j = io()
    expect(await runCli(['jobs', '--job', 'nightly', '--json'], j)).toBe(0)
    const rows = JSON.parse(j.out()) as { id: string; status: string; job: { id: string }; ranBy: string }[]
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ id: jobId, status: 'success', job: { id: 'nightly' } })
    expect(rows[0]!.ranBy.startsWith(`${proxyId}@`)).toBe(true)
    const jt = io()
    expect(await runCli(['jobs', '--state', 'failure', '--proxy', proxyId], jt)).toBe(0)
    expect(jt.out()).toBe('no job\n')
    const s = io()
    expect(await runCli(['job', 'show', jobId], s)).toBe(0)
    expect(s.out()).toContain(`job ${jobId} (backup.run) in {proxy.${proxyId}}: success`)
    expect(s.out()).toMatch(/ok {2}transfer {2}\d/)
    const l = io()
    expect(await runCli(['job', 'logs', jobId, '--json'], l)).toBe(0)
    expect(l.out().trim().split('\n').map((x) => (JSON.parse(x) as { event: string }).event)).toContain('end')

    const ls = io()
    expect(await runCli(['backups', 'ls', `file://${remote}`, '--vm', 'sim-vm-1', '--json'], ls)).toBe(0)
    const backups = JSON.parse(ls.out()) as { vm: { name: string; uuid: string }; timestamp: string; mode: string; chainLength: number; encrypted: boolean; sizeBytes: number }[]
    expect(backups).toHaveLength(1)
    expect(backups[0]).toMatchObject({ vm: { name: 'sim-vm-1' }, mode: 'delta', chainLength: 1, encrypted: false })
    expect(backups[0]!.sizeBytes).toBeGreaterThan(0)
    const table = io()
    expect(await runCli(['backups', 'ls', `file://${remote}`], table)).toBe(0)
    expect(table.out()).toMatch(/^VM +UUID +TIMESTAMP +TIME +MODE +SIZE +CHAIN/)
    expect(table.out()).toContain('2 backup(s)')

    restoreArgs = ['restore', `file://${remote}`, '--vm', 'sim-vm-1', '--disk', '']
    const vdi = sim.listVms().find((v) => v.nameLabel === 'sim-vm-1')!.vdis[0]!.uuid
    for (const at of [backups[0]!.timestamp, 'latest']) {
      const r = io()
      const to = join(dir.path, `restored-${at}.raw`)
      expect(await runCli(['restore', `file://${remote}`, '--vm', 'sim-vm-1', '--at', at, '--disk', vdi, '--to', to], r), r.err()).toBe(0)
      expect(r.out()).toContain(`at ${backups[0]!.timestamp}`)
      expect((await readFile(to)).length).toBe(8 * MiB)
    }
    restoreArgs[5] = vdi
  })

  it('draws a progress bar on a terminal (a pseudo-terminal from util-linux script), plain lines without one', async () => {
    const bin = new URL('../../bin/backup-proxy.js', import.meta.url).pathname
    const to = join(dir.path, 'tty.raw')
    const command = [process.execPath, bin, ...restoreArgs, '--to', to].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ')
    // script gives the command a pseudo-terminal: stdout and stderr are TTYs, its output is what a user sees
    const { stdout } = await promisify(execFile)('script', ['-q', '-e', '-c', command, '/dev/null'], { env: { ...process.env, TERM: 'xterm' } })
    // each redraw goes back to the start of the line and clears it (CR, ESC [K)
    expect(stdout).toContain('\r\u001b[Krestore [')
    expect(stdout).toMatch(/restore \[#*-*\] +\d+%/)
    expect(stdout).toMatch(/restore \[#{24}\] 100% 8\.0 MiB\/8\.0 MiB/)
    expect(stdout).toContain(`restored disk ${restoreArgs[5]}`)
    const plain = io()
    expect(await runCli([...restoreArgs, '--to', join(dir.path, 'plain.raw')], plain)).toBe(0)
    expect(plain.err()).not.toContain('\r')
    expect(plain.err()).toMatch(/^restore: 100% 8\.0 MiB\/8\.0 MiB/m)
    const json = io()
    expect(await runCli([...restoreArgs, '--to', join(dir.path, 'json.raw'), '--json'], json)).toBe(0)
    expect(json.err()).toBe('')
    expect(JSON.parse(json.out())).toMatchObject({ disk: restoreArgs[5], writtenBytes: 8 * MiB })
  })

  it('refuses an encrypted remote opened without its key (E_ENCRYPTION), and reads it with the key from the environment', async () => {
    const root = join(dir.path, 'enc')
    await mkdir(root)
    const key = 'operator-test-encryption-key-012'
    const remote = createRemote(`file://${root}`, { encryptionKey: key })
    await remote.open()
    await remote.close()
    for (const args of [['verify', `file://${root}`], ['backups', 'ls', `file://${root}`]]) {
      const o = io()
      expect(await runCli(args, o)).toBe(1)
      expect(o.err()).toContain('E_ENCRYPTION')
      expect(o.out()).not.toContain('ORPHAN')
    }
    process.env.BACKUP_PROXY_ENCRYPTION_KEY = key
    try {
      const v = io()
      expect(await runCli(['verify', `file://${root}`], v)).toBe(0)
      expect(v.out()).toContain('no problem found')
    } finally {
      delete process.env.BACKUP_PROXY_ENCRYPTION_KEY
    }
  })
})

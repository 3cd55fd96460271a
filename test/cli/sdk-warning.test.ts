/**
 * Operators never see the AWS SDK's NodeVersionSupportWarning (on Node < 22 the SDK prints a block
 * saying its releases after January 2027 need Node 22: a note for whoever upgrades our dependencies,
 * README "Requirements"). Real processes of the command, started without the SDK's switch in their
 * environment (src/cli/main.ts turns it on): `serve` backing a VM of the XAPI simulator up to the suite's
 * S3 store, the `backup` command that enqueued and followed that run, and `backups ls` on the store;
 * none prints the block on stdout or stderr. On Node < 22 the same S3 client created outside our entry
 * point does print it, so the check can fail.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { listProxies } from '../../src/queue/registry.js'
import { SealKey } from '../../src/queue/seal.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { startSim, MiB } from '../backup/helpers/fixture.js'
import { waitFor } from '../helpers/ports.js'

const SWITCH = 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'
const WARNING = 'NodeVersionSupportWarning'
const s3Url = inject('s3Url')
const redisUrl = inject('redisUrl')
const root = new URL('../../', import.meta.url).pathname
const bin = new URL('../../bin/backup-proxy.js', import.meta.url).pathname
const prefix = `bp-sdkw-${randomBytes(4).toString('hex')}`
const proxyId = `sdkw-${randomBytes(3).toString('hex')}`
const nodeMajor = Number(process.versions.node.split('.')[0])

/** The environment of the suite without the SDK's switch (vitest.config.ts sets it for the suite itself). */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra }
  delete env[SWITCH]
  return env
}

interface Child {
  output: () => string
  exited: Promise<number | null>
  kill: (signal: NodeJS.Signals) => void
}

function start(args: string[], env: NodeJS.ProcessEnv): Child {
  const child = spawn(process.execPath, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (c: Buffer) => void (output += c.toString()))
  child.stderr.on('data', (c: Buffer) => void (output += c.toString()))
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)))
  return { output: () => output, exited, kill: (signal) => void child.kill(signal) }
}

async function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  const c = start(args, env)
  const code = await c.exited
  return { code, output: c.output() }
}

describe.skipIf(s3Url === null)('the AWS SDK Node version warning', { timeout: 240_000 }, () => {
  const sealText = SealKey.generate().export()
  const env = childEnv({ REDIS_URL: redisUrl, BACKUP_PROXY_REDIS_PREFIX: prefix, BACKUP_PROXY_SECURITY_SEAL_KEY: sealText, BACKUP_PROXY_LOG_PRETTY: 'false' })
  // a directory of our own in the suite's bucket
  const [base, fragment] = (s3Url ?? '').split('#') as [string, string | undefined]
  const remote = `${base.replace(/\/?$/, '/')}sdk-warning-${randomBytes(3).toString('hex')}${fragment === undefined ? '' : `#${fragment}`}`
  let sim: XapiSimulator
  let serve: Child | undefined

  beforeAll(async () => {
    sim = await startSim({ vms: 1, diskSizeBytes: 4 * MiB })
  })

  afterAll(async () => {
    serve?.kill('SIGKILL')
    await serve?.exited
    await sim?.close()
    const redis = new Redis(redisUrl)
    const keys = await redis.keys(`${prefix}:*`)
    if (keys.length > 0) await redis.del(...keys)
    await redis.quit()
  })

  it.runIf(nodeMajor < 22)('is printed by the SDK on this Node when our entry point does not turn it off', async () => {
    const { code, output } = await run(['-e', "const { S3Client } = require('@aws-sdk/client-s3'); new S3Client({ region: 'us-east-1' })"], childEnv({}))
    expect(code).toBe(0)
    expect(output).toContain(WARNING)
  })

  it('is not printed by serve, backup or backups ls working on an S3 remote', async () => {
    serve = start([bin, 'serve', '--proxy', proxyId, '--listen', '127.0.0.1:0', '--threads', '1'], { ...env, BACKUP_PROXY_LOG_LEVEL: 'info' })
    const redis = new Redis(redisUrl)
    try {
      await waitFor(`proxy ${proxyId} live`, async () => {
        if (serve!.output().includes('"level":"error"') || (await Promise.race([serve!.exited.then(() => true), Promise.resolve(false)]))) throw new Error(`serve stopped:\n${serve!.output()}`)
        return (await listProxies(redis, prefix)).some((p) => p.proxyId === proxyId)
      }, 120_000)
    } finally {
      await redis.quit()
    }
    const xapi = sim.url.replace('://', `://${sim.user}@`)
    const backup = await run([bin, 'backup', '--proxy', proxyId, '--xapi', xapi, '--vm', 'sim-vm-0', '--remote', remote, '--json'], { ...env, BACKUP_PROXY_XAPI_PASSWORD: sim.password })
    expect(backup.code, backup.output).toBe(0)
    expect(backup.output).toMatch(/"status":\s*"success"/)
    expect(backup.output).not.toContain(WARNING)

    const ls = await run([bin, 'backups', 'ls', remote, '--json'], env)
    expect(ls.code, ls.output).toBe(0)
    expect(ls.output).toContain('sim-vm-0')
    expect(ls.output).not.toContain(WARNING)

    serve.kill('SIGTERM')
    expect(await serve.exited).toBe(0)
    // the run's disk went through serve's thread pool: its log shows the run, and no warning
    expect(serve.output()).toContain(proxyId)
    expect(serve.output()).not.toContain(WARNING)
  })
})

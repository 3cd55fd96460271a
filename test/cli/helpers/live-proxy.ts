/**
 * Shared fixture of the CLI tests that drive real jobs: a XAPI simulator, a real ProxyRuntime (built-in
 * processors, no stand-ins) on the suite's Redis under a prefix of its own, the CLI's environment pointed
 * at them, and a scratch directory. Registered as the file's beforeAll/afterAll; afterAll leaves Redis
 * and the environment as it found them. `captureIo()` is a CliIo that keeps what the command printed.
 */
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, inject } from 'vitest'
import type { CliIo } from '../../../src/cli/context.js'
import { silentLogger } from '../../../src/common/log.js'
import { compileConfig } from '../../../src/config/index.js'
import { SealKey } from '../../../src/queue/seal.js'
import { builtinProcessors } from '../../../src/workers/builtin-processors.js'
import { ProxyRuntime } from '../../../src/workers/proxy.js'
import type { XapiSimulator } from '../../../src/xapi/sim/index.js'
import { makeTempDir } from '../../helpers/tmp.js'
import { startSim, MiB } from '../../backup/helpers/fixture.js'
import { proxyConfig } from '../../backup/helpers/proxy-config.js'

interface LiveProxy {
  readonly redisUrl: string
  readonly prefix: string
  readonly proxyId: string
  readonly sealText: string
  /** available from beforeAll on */
  readonly sim: XapiSimulator
  /** the scratch directory, available from beforeAll on */
  readonly dir: string
}

export function useLiveProxy(o: { name: string; vms: number }): LiveProxy {
  const redisUrl = inject('redisUrl')
  const prefix = `bp-${o.name}-${randomBytes(4).toString('hex')}`
  const proxyId = `${o.name}-${randomBytes(3).toString('hex')}`
  const sealText = SealKey.generate().export()
  const env = { REDIS_URL: redisUrl, BACKUP_PROXY_REDIS_PREFIX: prefix, BACKUP_PROXY_SECURITY_SEAL_KEY: sealText, BACKUP_PROXY_LOG_LEVEL: 'silent' }
  const saved = new Map<string, string | undefined>()
  let sim: XapiSimulator | undefined
  let proxy: ProxyRuntime | undefined
  let dir: { path: string; remove: () => Promise<void> } | undefined

  beforeAll(async () => {
    for (const [k, v] of Object.entries(env)) {
      saved.set(k, process.env[k])
      process.env[k] = v
    }
    dir = await makeTempDir(`bp-cli-${o.name}-`)
    sim = await startSim({ vms: o.vms, diskSizeBytes: 8 * MiB })
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

  return {
    redisUrl, prefix, proxyId, sealText,
    get sim() {
      if (sim === undefined) throw new Error('the simulator starts in beforeAll')
      return sim
    },
    get dir() {
      if (dir === undefined) throw new Error('the scratch directory is made in beforeAll')
      return dir.path
    },
  }
}

export function captureIo(): CliIo & { out: () => string; err: () => string } {
  let out = ''
  let err = ''
  return { stdout: (t) => void (out += t), stderr: (t) => void (err += t), isTTY: false, out: () => out, err: () => err }
}

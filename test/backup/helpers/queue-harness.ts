/**
 * The harness of the backup tests that run tasks through the real queue (EnqueueClient → BullMQ →
 * ProxyRuntime with the builtin processors → the XAPI simulator): a temp dir, the simulator, a XAPI client
 * on it, an in-process proxy serving `proxyId` on the suite's Redis, and an enqueue client with a seal key
 * of its own. `run(task)` enqueues a task for that proxy and resolves with its summary; `close()` stops
 * everything, last started first (also what a failed start had started).
 */
import { createWriteStream } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { pipeline } from 'node:stream/promises'
import { silentLogger } from '../../../src/common/log.js'
import { compileConfig } from '../../../src/config/index.js'
import { EnqueueClient } from '../../../src/queue/client.js'
import { SealKey } from '../../../src/queue/seal.js'
import type { JobSummary } from '../../../src/queue/task-log.js'
import type { TaskInput } from '../../../src/queue/tasks.js'
import { builtinProcessors } from '../../../src/workers/builtin-processors.js'
import { ProxyRuntime } from '../../../src/workers/proxy.js'
import { XapiClient } from '../../../src/xapi/client.js'
import type { XapiSimulator, XapiSimulatorOptions } from '../../../src/xapi/sim/index.js'
import { makeTempDir } from '../../helpers/tmp.js'
import { startSim } from './fixture.js'
import { proxyConfig } from './proxy-config.js'

interface QueueHarnessOptions {
  redisUrl: string
  /** the proxy's id (its queue); unique per test file */
  proxyId: string
  /** prefix of the temp dir */
  dirPrefix: string
  /** the simulator's options; a function when they need the temp dir (e.g. TLS keys written there) */
  sim: Partial<XapiSimulatorOptions> | ((dir: string) => Promise<Partial<XapiSimulatorOptions>>)
}

export interface QueueHarness {
  dir: { path: string; remove: () => Promise<void> }
  sim: XapiSimulator
  xapi: XapiClient
  client: EnqueueClient
  proxy: ProxyRuntime
  /** the simulator as a task's `xapis` entry (or a restore's `xapi`) */
  xapiRef: () => { url: string; credentials: { username: string; password: string } }
  /** enqueues `task` for the harness's proxy and resolves with the job's summary */
  run: (task: TaskInput) => Promise<JobSummary>
  /** a VDI's raw content through the real client's export (`format=raw`), also written to `path` */
  exportRaw: (vdiUuid: string, path: string) => Promise<Buffer>
  close: () => Promise<void>
}

export async function startQueueHarness(options: QueueHarnessOptions): Promise<QueueHarness> {
  const stops: (() => Promise<unknown>)[] = []
  const close = async (): Promise<void> => {
    for (const stop of stops.splice(0).reverse()) await stop().catch(() => undefined)
  }
  try {
    const dir = await makeTempDir(options.dirPrefix)
    stops.push(dir.remove)
    const sim = await startSim(typeof options.sim === 'function' ? await options.sim(dir.path) : options.sim)
    stops.push(() => sim.close())
    const xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
    stops.push(() => xapi.close())
    const sealText = SealKey.generate().export()
    const sealKey = SealKey.fromString(sealText)
    const proxy = new ProxyRuntime({ config: compileConfig(proxyConfig(options.redisUrl, sealText, options.proxyId)), processors: builtinProcessors({ standIns: false }), sealKey, logger: silentLogger })
    stops.push(() => proxy.shutdown({ force: true }))
    await proxy.start()
    const client = new EnqueueClient({ redis: compileConfig(proxyConfig(options.redisUrl, sealText, 'x')).redis, sealKey, attempts: 1 })
    stops.push(() => client.close())
    return {
      dir,
      sim,
      xapi,
      client,
      proxy,
      xapiRef: () => ({ url: sim.url, credentials: { username: sim.user, password: sim.password } }),
      run: async (task) => (await client.enqueue({ proxy: options.proxyId }, task)).result(),
      exportRaw: async (vdiUuid, path) => {
        const vdi = await xapi.waitObject('VDI', vdiUuid, { timeoutMs: 10_000 })
        const exp = await xapi.openExport(vdi.$ref, { format: 'raw' })
        await pipeline(exp.stream, createWriteStream(path))
        await xapi.waitTask(exp.taskRef).catch(() => undefined)
        return readFile(path)
      },
      close,
    }
  } catch (error) {
    await close()
    throw error
  }
}

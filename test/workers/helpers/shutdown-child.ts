/**
 * A proxy in its own process for the shutdown ladder test (runtime-shutdown.test.ts): env REDIS_URL,
 * PROXY_ID, STREAM_DIR. Its only processor runs a stream task that ignores its cancel and never looks at
 * the job's abort signal. It enqueues one such job, asks the runtime to shut down once its stream runs, and
 * prints each observed effect as a JSON line `{ "event": ... }`. It never calls process.exit: the
 * process ends when nothing is left open, which is what the test checks.
 */
import { Redis } from 'ioredis'
import { errorCode, toError } from '../../../src/common/errors.js'
import { silentLogger } from '../../../src/common/log.js'
import { ProcessorRegistry } from '../../../src/workers/processors.js'
import { ProxyRuntime } from '../../../src/workers/proxy.js'
import { backupTask, client, sealKey, testConfig } from '../fixtures.js'

const note = (event: string): void => void process.stdout.write(`${JSON.stringify({ event })}\n`)
const config = testConfig(process.env.REDIS_URL!, { proxy: { id: process.env.PROXY_ID! }, workers: { threads: 1, concurrency: 1, shutdownGraceMs: 500 } })
const probe = new Redis(process.env.REDIS_URL!)
/** The runtime's connections to Redis (each named after its instance), as Redis lists them now. */
const runtimeConnections = async (): Promise<number> => {
  const list = (await probe.call('CLIENT', 'LIST')) as string
  return list.split('\n').filter((line) => line.includes(`name=backup-proxy:${runtime.instance}`)).length
}
/** resolved once the job's stream runs in its thread */
let started: () => void
const streaming = new Promise<void>((resolve) => (started = resolve))

const processors = new ProcessorRegistry().register('backup.run', async (ctx) => {
  ctx.signal.addEventListener('abort', () => note(`job aborted (${errorCode(ctx.signal.reason) ?? '?'})`))
  try {
    // ignores the cooperative cancel: only terminating its thread ends it; streaming once it reports progress
    const input = { dir: process.env.STREAM_DIR!, name: 'stuck.bin', sizeBytes: 1 << 30, chunkBytes: 64 << 10, chunkDelayMs: 20, ignoreCancel: true }
    await ctx.pool.run('standin.stream', input, { onProgress: () => started() })
  } catch (error) {
    note(`stream ended: ${toError(error).message}`)
    note(`runtime connections to Redis: ${await runtimeConnections()}`)
    throw error
  }
  return { status: 'success' }
})

const runtime = new ProxyRuntime({ config, processors, sealKey, logger: silentLogger })
runtime.redis.on('end', () => note('runtime Redis connection ended'))
await runtime.start()
const c = client(config)
const handle = await c.enqueue({ proxy: config.proxy.id }, backupTask())
await streaming
note('shutdown asked')
await runtime.shutdown()
note('shutdown resolved')
note(`runtime connections to Redis: ${await runtimeConnections()}`)
note(`job state: ${await handle.state()}`)
await c.cancel(handle.queue, handle.id).catch(() => undefined)
await c.close()
await probe.quit()
note('nothing left to close')

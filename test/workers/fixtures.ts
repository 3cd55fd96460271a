/** Shared test fixtures for the queue and worker tests: config, tasks, in-process proxies. */
import { randomBytes } from 'node:crypto'
import { compileConfig, type Config } from '../../src/config/index.js'
import { silentLogger } from '../../src/common/log.js'
import { EnqueueClient } from '../../src/queue/client.js'
import { SealKey } from '../../src/queue/seal.js'
import type { TaskInputOf } from '../../src/queue/tasks.js'
import { ProcessorRegistry } from '../../src/workers/processors.js'
import { ProxyRuntime } from '../../src/workers/proxy.js'
import { registerStandIns } from '../../src/workers/stand-ins/processors.js'

export const sealKeyText = randomBytes(32).toString('base64')
export const sealKey = SealKey.fromString(sealKeyText)

/** A unique id per test so queues and keys never collide between tests or files. */
export function uid(prefix = 't'): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`
}

export function testConfig(redisUrl: string, overrides: { proxy?: Record<string, unknown>; workers?: Record<string, unknown>; backup?: Record<string, unknown> } = {}): Config {
  return compileConfig({
    redis: { url: redisUrl },
    security: { sealKey: sealKeyText },
    http: { listen: '127.0.0.1:0' },
    log: { level: 'silent' },
    ...overrides,
    workers: { threads: 1, concurrency: 2, backoffMs: 100, lockDurationMs: 5000, stalledIntervalMs: 2000, ...overrides.workers },
  })
}

export function client(config: Config): EnqueueClient {
  return new EnqueueClient({ redis: config.redis, sealKey, attempts: config.workers.attempts, backoffMs: config.workers.backoffMs })
}

export const VM1 = '11111111-1111-4111-8111-111111111111'
export const VM2 = '22222222-2222-4222-8222-222222222222'

export function backupTask(options: { jobId?: string; scheduleId?: string; vms?: string[]; settings?: Record<string, unknown> } = {}): TaskInputOf<'backup.run'> {
  return {
    kind: 'backup.run',
    job: { id: options.jobId ?? uid('job'), name: 'test job', mode: 'delta', vms: { uuid: options.vms ?? [VM1] }, settings: { '': { standInDiskBytes: 64 << 10, ...options.settings } } },
    schedule: { id: options.scheduleId ?? 'sched-1' },
    remotes: { r1: { url: 'file:///tmp/bp-test-remote' } },
    xapis: { x1: { url: 'https://xapi.invalid', credentials: { username: 'root', password: 's3cr3t-Pa55' } } },
  }
}

export function standInRegistry(): ProcessorRegistry {
  return registerStandIns(new ProcessorRegistry())
}

export async function startProxy(config: Config, processors: ProcessorRegistry = standInRegistry()): Promise<ProxyRuntime> {
  const runtime = new ProxyRuntime({ config, processors, sealKey, logger: silentLogger, heartbeatIntervalMs: 500 })
  await runtime.start()
  return runtime
}

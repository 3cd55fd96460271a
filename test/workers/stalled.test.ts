/**
 * A job that stalls more than `workers.maxStalledCount` times fails with E_STALLED and a task log saying
 * what happened (not BullMQ's bare "job stalled more than allowable limit" and no summary). The dead proxy
 * is a bare BullMQ worker that takes the job and never renews its lock (what a SIGKILLed proxy leaves).
 */
import { Job, Worker } from 'bullmq'
import { describe, expect, inject, it } from 'vitest'
import { redisOptions } from '../../src/queue/redis.js'
import type { ProxyRuntime } from '../../src/workers/proxy.js'
import { waitFor } from '../helpers/ports.js'
import { backupTask, client, startProxy, testConfig, uid } from './fixtures.js'

const redisUrl = inject('redisUrl')

describe('a job past maxStalledCount', () => {
  it('fails with E_STALLED, a summary and a task log', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('ps') }, workers: { maxStalledCount: 0, lockDurationMs: 1000, stalledIntervalMs: 500 } })
    const c = client(config)
    const handle = await c.enqueue({ proxy: config.proxy.id }, backupTask())
    // the "dead" proxy: takes the job, never renews its lock, never finishes
    const dead = new Worker(handle.queue, null, { connection: redisOptions(config.redis), prefix: config.redis.prefix, autorun: false, lockDuration: 1000 })
    let proxy: ProxyRuntime | undefined
    try {
      const taken = await dead.getNextJob('dead-token')
      expect(taken?.id).toBe(handle.id)
      await dead.close()
      proxy = await startProxy(config)
      const summary = await handle.result()
      expect(summary.status).toBe('failure')
      expect(summary.error?.code).toBe('E_STALLED')
      expect(summary.error?.message).toMatch(/maxStalledCount \(0\)/)
      const job = await Job.fromId(c.queue(handle.queue), handle.id)
      expect(await job?.getState()).toBe('failed')
      // the proxy writes the task log right after BullMQ's failure: wait for it (the summary above may come from the failed reason)
      let log = await handle.taskLog()
      await waitFor('task log written', async () => (log = await handle.taskLog()).some((e) => e.event === 'end'), 30_000)
      expect(log.map((e) => e.event)).toEqual(['start', 'info', 'end'])
      expect(log[1]?.event === 'info' ? log[1].message : '').toMatch(/stalled 1 times/)
      expect(log[2]).toMatchObject({ status: 'failure', result: { code: 'E_STALLED' } })
    } finally {
      await proxy?.shutdown({ force: true })
      await dead.close()
      await c.close()
    }
  })
})

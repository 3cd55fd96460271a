/**
 * The short variant of `npm run chaos -- redis-restart-real` (bench/chaos-real.ts): real backup runs
 * queued to `serve` (one VM each, XAPI simulator, real engine, local remote), its private Redis (AOF)
 * restarted while some run. No job lost, none run twice to completion (one backup per VM), every job
 * succeeds, `verify --full` clean.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { freePort, RedisServer } from '../../bench/chaos-lib.js'
import { redisRestartReal } from '../../bench/chaos-real.js'
import { useTempDir } from '../helpers/tmp.js'

const tmp = useTempDir('bp-chaos-rr-')
let redis: RedisServer | undefined
afterAll(async () => {
  await redis?.stop()
})

describe('Redis restarted with real backup runs queued and running', () => {
  it('no job lost, none run twice to completion, the remote verifies clean', async () => {
    await mkdir(join(tmp(), 'redis'))
    redis = new RedisServer(await freePort(), join(tmp(), 'redis'))
    await redis.start()
    const r = await redisRestartReal({ redis, work: tmp(), jobs: 16 })
    expect(r.activeBefore).toBeGreaterThan(0)
    expect(r.lost).toBe(0)
    expect(r.completedTwice).toBe(0)
    expect(r.outcomes).toEqual({ success: 16 })
    expect(r.verifyProblems).toEqual([])
  }, 300_000)
})

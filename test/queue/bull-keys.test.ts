/**
 * Our reads and writes of BullMQ's own keys (job logs, the event stream, job locks) use the names BullMQ
 * itself uses: bullKeys() is checked against a real BullMQ Queue and a job it created on Redis.
 */
import { Queue, QueueKeys } from 'bullmq'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { bullKeys, queueKeys } from '../../src/queue/names.js'

const prefix = `bp-test-keys-${randomBytes(4).toString('hex')}`
const name = '{proxy.keys}'
const redis = new Redis({ host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null })
const queue = new Queue(name, { prefix, connection: redis.duplicate() })
afterAll(async () => {
  await queue.obliterate({ force: true }).catch(() => undefined)
  await queue.close()
  redis.disconnect()
})

describe('bullKeys', () => {
  it('names the keys BullMQ uses for a queue and its jobs', async () => {
    const keys = bullKeys(prefix, name)
    expect(keys.events).toBe(queue.keys.events)
    const job = await queue.add('k', { x: 1 })
    const id = job.id ?? ''
    expect(keys.job(id)).toBe(queue.toKey(id))
    expect(await redis.exists(keys.job(id))).toBe(1)
    await job.log('a line')
    expect(await redis.lrange(keys.logs(id), 0, -1)).toEqual(['a line'])
    expect(queueKeys.lock(prefix, name, id)).toBe(`${queue.toKey(id)}:lock`)
  })

  it('keeps each prefix and queue apart when asked again (its results are memoized)', () => {
    // pairs whose prefix + queue read the same when simply joined
    const pairs: [string, string][] = [['bp:x', '{proxy.a}'], ['bp:', 'x{proxy.a}'], ['bp', ':x{proxy.a}']]
    for (let i = 0; i < 70; i++) pairs.push([`bp-${i}`, `{pool.p${i}}`]) // more than the memo holds
    for (const round of [1, 2]) {
      for (const [p, q] of pairs) {
        const expected = new QueueKeys(p)
        const keys = bullKeys(p, q)
        expect({ round, events: keys.events, job: keys.job('7'), logs: keys.logs('7') }).toEqual({ round, events: expected.getKeys(q).events, job: expected.toKey(q, '7'), logs: `${expected.toKey(q, '7')}:logs` })
      }
    }
  })
})

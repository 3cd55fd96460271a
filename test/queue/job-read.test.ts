/**
 * The plain-Redis job reads of `jobs` and `job show|logs` (src/queue/job-read.ts) give what BullMQ gives:
 * checked against a real BullMQ Queue holding a job in each state (completed, failed, active, delayed,
 * prioritized, waiting) and an id whose hash is gone, for the decoded fields (Job.fromId), the state
 * (getJobState), the listing (getJobs newest first, per state, skipping the id without a hash) and the
 * log (getJobLogs).
 */
import { Job, Queue, Worker } from 'bullmq'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { listStoredJobs, readFinishedSummary, readJob, readJobLogs, readJobState, type JobStore, type ListedState, type StoredJob } from '../../src/queue/job-read.js'

const redisUrl = inject('redisUrl')
const prefix = `bp-test-jobread-${randomBytes(4).toString('hex')}`
const name = '{proxy.jobread}'
const redis = new Redis(redisUrl, { maxRetriesPerRequest: null })
const queue = new Queue(name, { prefix, connection: redis.duplicate() })
const worker = new Worker(name, null, { prefix, connection: redis.duplicate(), autorun: false, lockDuration: 600_000 })
const store: JobStore = { prefix, redis: () => Promise.resolve(redis) }
const ids: Record<string, string> = {}

beforeAll(async () => {
  const take = async (id: string): Promise<Job> => {
    const job = await worker.getNextJob('token')
    expect(job?.id).toBe(id)
    return job
  }
  await queue.add('k', { n: 'completed' }, { jobId: 'j-completed' })
  await (await take('j-completed')).moveToCompleted({ status: 'success', x: [1, 2] }, 'token', false)
  await queue.add('k', { n: 'failed' }, { jobId: 'j-failed' })
  await (await take('j-failed')).moveToFailed(new Error('it broke'), 'token', false)
  await queue.add('k', { n: 'active' }, { jobId: 'j-active' })
  await take('j-active')
  await queue.add('k', { n: 'delayed' }, { jobId: 'j-delayed', delay: 3_600_000 })
  await queue.add('k', { n: 'prioritized' }, { jobId: 'j-prioritized', priority: 5 })
  for (const n of ['w1', 'w2', 'gone', 'w3']) await queue.add('k', { n }, { jobId: `j-${n}`, timestamp: Date.now() })
  await redis.del(queue.toKey('j-gone')) // its id stays in the wait list, as after a removal in between
  const logged = (await Job.fromId(queue, 'j-w1'))!
  for (const line of ['one', 'two', 'three']) await logged.log(line)
  Object.assign(ids, { completed: 'j-completed', failed: 'j-failed', active: 'j-active', delayed: 'j-delayed', prioritized: 'j-prioritized', waiting: 'j-w1' })
})

afterAll(async () => {
  await worker.close(true)
  await queue.obliterate({ force: true }).catch(() => undefined)
  await queue.close()
  redis.disconnect()
})

const fields = (job: Job | StoredJob | undefined) =>
  job === undefined ? undefined : { id: job.id, name: job.name, data: job.data as unknown, timestamp: job.timestamp, processedOn: job.processedOn, finishedOn: job.finishedOn, failedReason: job.failedReason || undefined, returnvalue: job.returnvalue as unknown, attemptsStarted: job.attemptsStarted, stalledCounter: job.stalledCounter }

describe('job reads without BullMQ', () => {
  it('decode a job and find its state as BullMQ does', async () => {
    for (const [state, id] of Object.entries(ids)) {
      expect(await queue.getJobState(id)).toBe(state)
      expect(await readJobState(store, name, id)).toBe(state)
      expect(fields(await readJob(store, name, id))).toEqual(fields(await Job.fromId(queue, id)))
    }
    expect((await readJob(store, name, 'j-completed'))?.returnvalue).toEqual({ status: 'success', x: [1, 2] })
    expect((await readJob(store, name, 'j-failed'))?.failedReason).toBe('it broke')
    expect(await readJob(store, name, 'j-gone')).toBeUndefined()
    expect(await readJobState(store, name, 'no-such-job')).toBe(await queue.getJobState('no-such-job'))
  })

  it('list the newest jobs per state as getJobs does, skipping an id whose hash is gone', async () => {
    const all: ListedState[] = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed']
    for (const types of [all, ['waiting'], ['waiting', 'prioritized'], ['active'], ['completed', 'failed']] as ListedState[][]) {
      for (const count of [1, 2, 3, 20]) {
        const bull = (await queue.getJobs(types, 0, count - 1, false)).map((j) => j.id)
        expect((await listStoredJobs(store, name, types, count)).map((j) => j.id), `${types.join(',')} ${count}`).toEqual(bull)
      }
    }
    expect((await listStoredJobs(store, name, ['waiting'], 3)).map((j) => j.id)).toEqual(['j-w3', 'j-w2', 'j-w1'])
  })

  it('read a job log whole or its last lines, and the summary of a finished job', async () => {
    expect(await readJobLogs(store, name, 'j-w1')).toEqual((await queue.getJobLogs('j-w1', 0, -1)).logs)
    expect(await readJobLogs(store, name, 'j-w1', 1)).toEqual((await queue.getJobLogs('j-w1', 0, 0, false)).logs)
    expect(await readJobLogs(store, name, 'j-w1', 1)).toEqual(['three'])
    expect(await readFinishedSummary(store, name, 'j-completed')).toEqual({ status: 'success', x: [1, 2] })
    expect(await readFinishedSummary(store, name, 'j-failed')).toMatchObject({ jobId: 'j-failed', kind: 'k', status: 'failure', error: { code: 'E_BACKUP', message: 'it broke' } })
    expect(await readFinishedSummary(store, name, 'j-w1')).toBeUndefined()
    expect(await readFinishedSummary(store, name, 'no-such-job')).toMatchObject({ status: 'interrupted', error: { code: 'E_CANCELLED' } })
  })
})

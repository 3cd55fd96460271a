/**
 * The proxy runtime's shutdown ladder, observed from outside: a real ProxyRuntime (in a child process:
 * helpers/shutdown-child.ts) on the suite's Redis runs a job whose stream ignores its cancel and whose
 * processor ignores its abort signal. Shutdown: the grace period passes, the job is aborted (graceful
 * rung), its stream still runs, so the pool's forceful rung terminates its thread; only then does the
 * processor return, the worker close, and the runtime's Redis connections quit (they are all still
 * connected when the stream is killed, none is afterwards). The job is back in the queue, and the process
 * ends by itself, without process.exit: nothing the runtime opened is left behind.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, inject, it } from 'vitest'
import { startDaemon } from '../helpers/process.js'
import { uid } from './fixtures.js'

const redisUrl = inject('redisUrl')
const root = new URL('../..', import.meta.url).pathname

describe('proxy runtime shutdown ladder', () => {
  it('a job ignoring its abort and its cancel: aborted, its thread terminated, then workers and Redis closed; the process ends on its own', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bp-shutdown-'))
    try {
      const child = startDaemon(process.execPath, ['--import', 'tsx', 'test/workers/helpers/shutdown-child.ts'], {
        cwd: root,
        env: { ...process.env, REDIS_URL: redisUrl, PROXY_ID: uid('sd'), STREAM_DIR: dir },
      })
      const code = await new Promise<number | null>((resolve) => child.child.once('close', (c) => resolve(c)))
      const events = child
        .output()
        .split('\n')
        .filter((line) => line.startsWith('{"event"'))
        .map((line) => (JSON.parse(line) as { event: string }).event)
      expect(code, child.output()).toBe(0)
      const at = (prefix: string): number => events.findIndex((e) => e.startsWith(prefix))
      expect(events[at('job aborted')]).toBe('job aborted (E_CANCELLED)')
      expect(events[at('stream ended')]).toContain('its thread was terminated')
      // the order of the ladder: abort (graceful), then the forceful step, then the workers and Redis
      expect(at('shutdown asked')).toBeLessThan(at('job aborted'))
      expect(at('job aborted')).toBeLessThan(at('stream ended'))
      expect(at('stream ended')).toBeLessThan(at('shutdown resolved'))
      expect(at('stream ended'), JSON.stringify(events)).toBeLessThan(at('runtime Redis connection ended'))
      // when the stream was killed every runtime connection was still open; after shutdown, none is
      const counts = events.filter((e) => e.startsWith('runtime connections to Redis: ')).map((e) => Number(e.split(': ')[1]))
      expect(counts.length).toBe(2)
      expect(counts[0]).toBeGreaterThanOrEqual(2)
      expect(counts[1]).toBe(0)
      expect(events).toContain('job state: waiting')
      expect(events.at(-1)).toBe('nothing left to close')
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }, 240_000)
})

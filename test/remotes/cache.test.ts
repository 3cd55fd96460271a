/**
 * RemoteCache: opened remotes are shared by URL and options, kept open for a bounded idle time, never
 * kept when open() failed, and all closed by close(). Real local remotes; opens and closes are counted
 * through the cache's factory; the idle life runs on vitest's fake timers (no sleeping).
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { RemoteCache } from '../../src/remotes/cache.js'
import { createRemote } from '../../src/remotes/index.js'
import type { Remote } from '../../src/remotes/remote.js'
import type { RemoteOptions } from '../../src/remotes/url-types.js'
import { makeTempDir } from '../helpers/tmp.js'

let dir: { path: string; remove: () => Promise<void> }
beforeAll(async () => {
  dir = await makeTempDir('bp-remote-cache-')
  await Promise.all(['a', 'b', 'c'].map((n) => mkdir(join(dir.path, n))))
})
afterAll(async () => {
  await dir?.remove()
})
afterEach(() => {
  vi.useRealTimers()
})

/** A cache whose remotes count their close() calls. */
function counting(idleMs: number): { cache: RemoteCache; closes: () => number } {
  let closes = 0
  const cache = new RemoteCache({
    idleMs,
    create: (url: string, options: RemoteOptions): Remote => {
      const remote = createRemote(url, options)
      const close = remote.close.bind(remote)
      remote.close = async () => {
        closes++
        await close()
      }
      return remote
    },
  })
  return { cache, closes: () => closes }
}

describe('RemoteCache', () => {
  it('3 targets x 4 disks open 3 remotes, concurrently or one disk after the other', async () => {
    const { cache } = counting(60_000)
    const urls = ['a', 'b', 'c'].map((n) => `file://${dir.path}/${n}`)
    const disk = async (): Promise<void> => {
      const leases = await Promise.all(urls.map((u) => cache.acquire(u, {})))
      await leases[0]!.remote.writeFile(`x-${Math.random()}`, 'x')
      for (const l of leases) l.release()
    }
    await disk()
    await Promise.all([disk(), disk()])
    await disk()
    expect(cache.opens).toBe(3)
    expect(cache.size).toBe(3)
    // other options are another remote
    const other = await cache.acquire(urls[0]!, { useVhdDirectory: true })
    expect(cache.opens).toBe(4)
    other.release()
    await cache.close()
    expect(cache.size).toBe(0)
  })

  it('closes a remote once idle for idleMs, not while leased; reuses it before', async () => {
    vi.useFakeTimers()
    const { cache, closes } = counting(1000)
    const url = `file://${dir.path}/a`
    const first = await cache.acquire(url)
    const second = await cache.acquire(url)
    first.release()
    first.release() // idempotent
    vi.advanceTimersByTime(5000)
    expect(closes()).toBe(0) // still leased by `second`
    second.release()
    vi.advanceTimersByTime(500)
    const again = await cache.acquire(url) // within the idle life: the same remote
    expect(again.remote).toBe(first.remote)
    again.release()
    vi.advanceTimersByTime(1000)
    expect(closes()).toBe(1)
    expect(cache.size).toBe(0)
    expect(cache.opens).toBe(1)
    await cache.acquire(url).then((l) => l.release())
    expect(cache.opens).toBe(2)
    await cache.close()
  })

  it('does not keep a remote whose open() failed', async () => {
    const { cache } = counting(60_000)
    const url = `file://${dir.path}/missing`
    await expect(cache.acquire(url)).rejects.toMatchObject({ code: 'ENOENT' })
    expect(cache.size).toBe(0)
    await mkdir(join(dir.path, 'missing'))
    const lease = await cache.acquire(url)
    expect(cache.opens).toBe(2)
    lease.release()
    await cache.close()
  })
})

/**
 * Opened remotes shared by everything a thread (or a run) does, keyed by URL and options: opening a
 * remote is an NFS mount or an SMB session, so a backup with 3 targets and 4 disks in one thread opens 3
 * remotes, not 12. A lease (`acquire`) returns the opened remote and a `release`; when the last lease
 * is released the remote stays open for `idleMs` (a bounded idle life) so the next disk reuses it, then
 * it is closed. A remote whose open() failed is not kept: the next acquire tries again.
 *
 * `close()` is the last step of an owner's shutdown: it closes every remote now, leased or not (pending
 * operations on them fail); later acquires open new ones.
 */
import { createHash } from 'node:crypto'
import { createRemote } from './index.js'
import type { Remote } from './remote.js'
import type { RemoteOptions } from './url-types.js'

export interface RemoteLease {
  readonly remote: Remote
  /** gives the remote back (idempotent); it closes once idle for the cache's idleMs */
  release(): void
}

interface RemoteCacheOptions {
  /** how long an unused remote stays open, ms (default 30 s; 0 closes it on the last release) */
  idleMs?: number
  /** makes a remote (default createRemote); tests count opens through it */
  create?: (url: string, options: RemoteOptions) => Remote
}

interface Entry {
  remote: Remote
  opening: Promise<void>
  leases: number
  idle: NodeJS.Timeout | undefined
}

/** A stable key: the URL and the options sorted by name, hashed (the options may hold an encryption key). */
function keyOf(url: string, options: RemoteOptions): string {
  const sorted = Object.entries(options).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return createHash('sha256').update(JSON.stringify([url, sorted])).digest('hex')
}

export class RemoteCache {
  readonly #entries = new Map<string, Entry>()
  readonly #idleMs: number
  readonly #create: (url: string, options: RemoteOptions) => Remote
  /** remotes this cache opened (for tests and metrics) */
  opens = 0

  constructor(options: RemoteCacheOptions = {}) {
    this.#idleMs = options.idleMs ?? 30_000
    this.#create = options.create ?? ((url, o) => createRemote(url, o))
  }

  /** Remotes currently open (leased or idle). */
  get size(): number {
    return this.#entries.size
  }

  /**
   * The opened remote for `url` + `options`, shared with every other lease of the same key. `beforeOpen`
   * runs on a remote this call creates, before it opens (to attach metrics that must see the open).
   */
  async acquire(url: string, options: RemoteOptions = {}, hooks: { beforeOpen?: (remote: Remote) => void } = {}): Promise<RemoteLease> {
    const key = keyOf(url, options)
    let entry = this.#entries.get(key)
    if (entry === undefined) {
      const remote = this.#create(url, options)
      this.opens++
      hooks.beforeOpen?.(remote)
      const opening = remote.open()
      entry = { remote, opening, leases: 0, idle: undefined }
      this.#entries.set(key, entry)
      const created = entry
      opening.catch(() => {
        // never keep a remote that did not open; the acquirer gets the error below
        if (this.#entries.get(key) === created) this.#entries.delete(key)
        void remote.close().catch(() => undefined)
      })
    }
    clearTimeout(entry.idle)
    entry.idle = undefined
    entry.leases++
    try {
      await entry.opening
    } catch (error) {
      entry.leases--
      throw error
    }
    return this.#lease(key, entry)
  }

  #lease(key: string, entry: Entry): RemoteLease {
    let released = false
    return {
      remote: entry.remote,
      release: () => {
        if (released) return
        released = true
        if (--entry.leases > 0 || this.#entries.get(key) !== entry) return
        if (this.#idleMs === 0) {
          this.#drop(key, entry)
          return
        }
        entry.idle = setTimeout(() => this.#drop(key, entry), this.#idleMs)
        entry.idle.unref()
      },
    }
  }

  #drop(key: string, entry: Entry): void {
    if (entry.leases > 0 || this.#entries.get(key) !== entry) return
    this.#entries.delete(key)
    // best effort: a remote that fails to close has nothing left for us to do
    void entry.remote.close().catch(() => undefined)
  }

  /** Closes every remote now (the owner is shutting down); leases still held see their operations fail. */
  async close(): Promise<void> {
    const entries = [...this.#entries.values()]
    this.#entries.clear()
    for (const e of entries) clearTimeout(e.idle)
    await Promise.all(entries.map((e) => e.remote.close().catch(() => undefined)))
  }
}

/**
 * The remote conformance suite: the same tests for every remote (local, S3, NFS, SMB). Each backend's
 * test file calls `describeRemoteConformance(name, makeRemote, options)`; `makeRemote` returns a fresh,
 * not yet opened remote on the backend under test. Every test works in its own random sub-directory so
 * backends can share a root, and nothing here asserts timings (speed is bench/'s job).
 *
 * Backend-specific checks plug in through `options` (e.g. S3 verifies that an aborted upload left no
 * multipart upload behind, and the part count of a large upload).
 */
import { createDecipheriv, createHash, randomBytes } from 'node:crypto'
import { getEventListeners } from 'node:events'
import { Readable, type Writable } from 'node:stream'
import { finished, pipeline } from 'node:stream/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BackupProxyError, RemoteError } from '../../src/common/errors.js'
import type { Remote, RemoteBytesEvent, RemoteOpEvent } from '../../src/remotes/remote.js'
import { createEncryptedRemote } from '../../src/remotes/encryption.js'

interface ConformanceOptions {
  /** entries in the large-listing test (default 1100: more than one S3 page of 1000) */
  listCount?: number
  /** size of the generated large upload (default 48 MiB; BACKUP_PROXY_TEST_LARGE=1 makes it 5.5 GiB) */
  largeUploadBytes?: number
  /** files written in parallel by the listing test (default 16) */
  writeConcurrency?: number
  /** extra checks after a writer was destroyed or aborted (e.g. no orphan multipart upload) */
  checkNoLeftovers?: (remote: Remote, path: string) => Promise<void>
  /** extra checks after the large upload (e.g. S3 part count) */
  checkLargeUpload?: (remote: Remote, path: string, sizeBytes: number) => Promise<void>
  /** skip the encryption tests (default: run them, the wrapper works on any remote) */
  skipEncryption?: boolean
  /**
   * the remote under test reads files whole only (an encrypted remote, as Xen Orchestra's): every
   * ranged read must fail with E_ENCRYPTED_RANGE, whole reads keep working
   */
  wholeFileReads?: boolean
  /** per-test timeout, ms (default 120 s) */
  timeoutMs?: number
}

const MiB = 1024 * 1024

/** Awaits `promise` and checks it failed with one of our errors carrying `code`. */
export async function expectCode(promise: Promise<unknown>, code: string): Promise<BackupProxyError> {
  let error: unknown
  try {
    await promise
  } catch (e) {
    error = e
  }
  expect(error, `expected a ${code} error`).toBeInstanceOf(BackupProxyError)
  expect((error as BackupProxyError).code).toBe(code)
  return error as BackupProxyError
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c)
  return Buffer.concat(chunks)
}

async function waitClosed(stream: Writable): Promise<void> {
  if (stream.closed) return
  await new Promise<void>((resolve) => stream.once('close', () => resolve()))
}

/** Writes `n` bytes of zeros (a sparse disk) from one reused buffer. */
function zeroStream(n: number, chunkBytes = 4 * MiB): Readable {
  const zero = Buffer.alloc(chunkBytes)
  let left = n
  return new Readable({
    highWaterMark: chunkBytes,
    read() {
      if (left === 0) return void this.push(null)
      const k = Math.min(left, chunkBytes)
      left -= k
      this.push(k === chunkBytes ? zero : zero.subarray(0, k))
    },
  })
}

async function mapLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let i = 0
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (i < items.length) await fn(items[i++] as T)
  })
  await Promise.all(workers)
}

export function describeRemoteConformance(name: string, makeRemote: () => Promise<Remote>, options: ConformanceOptions = {}): void {
  const timeout = options.timeoutMs ?? 120_000
  describe(`remote conformance: ${name}`, { timeout }, () => {
    let remote: Remote
    const base = `conformance-${randomBytes(4).toString('hex')}`
    let n = 0
    /** a fresh directory for one test */
    const dir = () => `${base}/t${++n}`

    beforeAll(async () => {
      remote = await makeRemote()
      await remote.open()
      await remote.mkdir(base)
    }, timeout)
    afterAll(async () => {
      if (remote === undefined) return
      try {
        await remote.rmtree(base)
      } finally {
        await remote.close()
      }
    }, timeout)

    it('refuses path traversal, absolute paths and NUL bytes with EACCES', async () => {
      for (const bad of ['../x', 'a/../../x', 'a/..', '/etc/passwd', '\\x', 'a\0b', 'C:/x']) {
        await expectCode(remote.readFile(bad), 'EACCES')
        await expectCode(remote.writeFile(bad, 'x'), 'EACCES')
        await expectCode(remote.createWriteStream(bad), 'EACCES')
        await expectCode(remote.createReadStream(bad), 'EACCES')
        await expectCode(remote.stat(bad), 'EACCES')
        await expectCode(remote.list(bad), 'EACCES')
        await expectCode(remote.unlink(bad), 'EACCES')
        await expectCode(remote.rmtree(bad), 'EACCES')
        await expectCode(remote.mkdir(bad), 'EACCES')
        await expectCode(remote.rename(bad, `${base}/ok`), 'EACCES')
        await expectCode(remote.rename(`${base}/ok`, bad), 'EACCES')
      }
    })

    it('writes, reads, overwrites and stats files; missing files are ENOENT', async () => {
      const d = dir()
      const data = randomBytes(100_000)
      await remote.writeFile(`${d}/a/b.bin`, data)
      expect((await remote.readFile(`${d}/a/b.bin`)).equals(data)).toBe(true)
      const s = await remote.stat(`${d}/a/b.bin`)
      expect(s.size).toBe(data.length)
      expect(s.isDirectory).toBe(false)
      expect((await remote.stat(`${d}/a`)).isDirectory).toBe(true)
      await remote.writeFile(`${d}/a/b.bin`, 'short')
      expect((await remote.readFile(`${d}/a/b.bin`)).toString()).toBe('short')
      await remote.writeFile(`${d}/empty`, Buffer.alloc(0))
      expect((await remote.readFile(`${d}/empty`)).length).toBe(0)
      expect((await remote.stat(`${d}/empty`)).size).toBe(0)
      const emptyStream = await remote.createWriteStream(`${d}/empty-stream`)
      emptyStream.end()
      await finished(emptyStream)
      expect((await remote.readFile(`${d}/empty-stream`)).length).toBe(0)
      await expectCode(remote.readFile(`${d}/missing`), 'ENOENT')
      // into: the same bytes wherever the transport reads them (local: a view of the given buffer)
      await remote.writeFile(`${d}/into`, data)
      const given = Buffer.alloc(data.length + 10)
      const read = await remote.readFile(`${d}/into`, { into: (size) => (size === data.length ? given : undefined) })
      expect(read.equals(data)).toBe(true)
      expect((await remote.readFile(`${d}/into`, { into: () => Buffer.alloc(10) })).equals(data)).toBe(true)
      await expectCode(remote.stat(`${d}/missing`), 'ENOENT')
      await expectCode(remote.createReadStream(`${d}/missing`), 'ENOENT')
      expect(await remote.exists(`${d}/a/b.bin`)).toBe(true)
      expect(await remote.exists(`${d}/missing`)).toBe(false)
    })

    it('refuses an exclusive write over an existing file with EEXIST and keeps the file', async () => {
      const d = dir()
      await remote.writeFile(`${d}/x`, 'first')
      await expectCode(remote.writeFile(`${d}/x`, 'second', { exclusive: true }), 'EEXIST')
      expect((await remote.readFile(`${d}/x`)).toString()).toBe('first')
      await remote.writeFile(`${d}/y`, 'new', { exclusive: true })
      expect((await remote.readFile(`${d}/y`)).toString()).toBe('new')
    })

    it('publishes atomically: nothing is visible under the final name before finish', async () => {
      const d = dir()
      const path = `${d}/disk.vhd`
      await remote.writeFile(`${d}/other`, 'x') // so the directory exists on every backend
      const data = randomBytes(6 * MiB + 123)
      const out = await remote.createWriteStream(path, { expectedSizeBytes: data.length })
      const finishedAt: number[] = []
      out.on('finish', () => finishedAt.push(Date.now()))
      out.write(data.subarray(0, 4 * MiB))
      await new Promise((r) => setTimeout(r, 50))
      await expectCode(remote.stat(path), 'ENOENT')
      expect((await remote.list(d)).map((e) => e.path)).not.toContain('disk.vhd')
      out.end(data.subarray(4 * MiB))
      await finished(out)
      expect(finishedAt.length).toBe(1)
      // 'finish' means published: visible and complete right away
      expect((await remote.stat(path)).size).toBe(data.length)
      expect(createHash('sha256').update(await remote.readFile(path)).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'))
      expect((await remote.list(d, { includeHidden: true })).map((e) => e.path)).toEqual(['disk.vhd', 'other'])
    })

    it('a destroyed writer leaves no final object and no temporary', async () => {
      const d = dir()
      const path = `${d}/killed.vhd`
      const out = await remote.createWriteStream(path, { expectedSizeBytes: 20 * MiB })
      out.on('error', () => undefined)
      out.write(randomBytes(7 * MiB))
      await new Promise((r) => setTimeout(r, 100))
      out.destroy(new Error('killed'))
      await waitClosed(out)
      await expectCode(remote.stat(path), 'ENOENT')
      const left = await remote.list(d, { includeHidden: true }).catch((e: unknown) => {
        if (e instanceof RemoteError && e.code === 'ENOENT') return []
        throw e
      })
      expect(left).toEqual([])
      await options.checkNoLeftovers?.(remote, path)
    })

    it('an aborted signal stops the writer, leaving nothing', async () => {
      const d = dir()
      const path = `${d}/aborted.vhd`
      const ac = new AbortController()
      const out = await remote.createWriteStream(path, { signal: ac.signal, expectedSizeBytes: 20 * MiB })
      const errors: unknown[] = []
      out.on('error', (e) => errors.push(e))
      out.write(randomBytes(6 * MiB))
      await new Promise((r) => setTimeout(r, 100))
      ac.abort()
      await waitClosed(out)
      expect(errors.length).toBeGreaterThan(0)
      await expectCode(remote.stat(path), 'ENOENT')
      const left = await remote.list(d, { includeHidden: true }).catch(() => [])
      expect(left).toEqual([])
      await options.checkNoLeftovers?.(remote, path)
      const pre = new AbortController()
      pre.abort()
      await expect(remote.createWriteStream(`${d}/never`, { signal: pre.signal })).rejects.toThrow()
    })

    it('reads byte ranges (inclusive end, as node:fs)', async () => {
      const d = dir()
      const data = randomBytes(3 * MiB + 777)
      await remote.writeFile(`${d}/r.bin`, data)
      const cases: [number, number | undefined][] = [
        [0, 0],
        [0, 9],
        [1000, 2000],
        [MiB - 5, MiB + 5],
        [2 * MiB, 3 * MiB - 1],
        [data.length - 10, data.length - 1],
        [data.length - 10, undefined],
        [12345, undefined],
      ]
      for (const [start, end] of cases) {
        const range = end === undefined ? { start } : { start, end }
        if (options.wholeFileReads === true && (start !== 0 || end !== undefined)) {
          await expectCode(remote.createReadStream(`${d}/r.bin`, range), 'E_ENCRYPTED_RANGE')
          continue
        }
        const got = await readAll(await remote.createReadStream(`${d}/r.bin`, range))
        expect(got.equals(data.subarray(start, end === undefined ? undefined : end + 1)), `range ${start}-${end}`).toBe(true)
      }
      expect((await readAll(await remote.createReadStream(`${d}/r.bin`))).equals(data)).toBe(true)
      await expectCode(remote.createReadStream(`${d}/r.bin`, { start: -1 }), 'EINVAL')
      await expectCode(remote.createReadStream(`${d}/r.bin`, { start: 10, end: 5 }), 'EINVAL')
    })

    it('opens a file for positioned reads (openFile: concurrent reads, short at the end, closed once)', async () => {
      const d = dir()
      const data = randomBytes(3 * MiB + 777)
      await remote.writeFile(`${d}/p.bin`, data)
      const file = await remote.openFile(`${d}/p.bin`)
      try {
        expect(file.size).toBe(data.length)
        if (options.wholeFileReads === true) {
          await expectCode(file.read(Buffer.alloc(10), 0, 10, 1000), 'E_ENCRYPTED_RANGE')
          return
        }
        const cases: [number, number][] = [
          [0, 1],
          [1000, 2000],
          [MiB - 5, MiB + 10],
          [2 * MiB + 3, 700_000],
          [2 * MiB, 7],
          [0, data.length],
        ]
        // concurrent reads on the one file, each into its own buffer at an offset
        const got = await Promise.all(
          cases.map(async ([position, length]) => {
            const buffer = Buffer.alloc(length + 3, 0xaa)
            const n = await file.read(buffer, 3, length, position)
            return { n, buffer }
          }),
        )
        got.forEach(({ n, buffer }, i) => {
          const [position, length] = cases[i]!
          expect(n, `read ${position}+${length}`).toBe(length)
          expect(buffer.subarray(0, 3).equals(Buffer.alloc(3, 0xaa))).toBe(true)
          expect(buffer.subarray(3).equals(data.subarray(position, position + length)), `read ${position}+${length}`).toBe(true)
        })
        const tail = Buffer.alloc(100)
        expect(await file.read(tail, 0, 100, data.length - 40)).toBe(40)
        expect(tail.subarray(0, 40).equals(data.subarray(data.length - 40))).toBe(true)
        expect(await file.read(tail, 0, 100, data.length)).toBe(0)
        expect(await file.read(tail, 0, 0, 5)).toBe(0)
        await expectCode(file.read(tail, 0, 10, -1), 'EINVAL')
        await expectCode(file.read(tail, 95, 10, 0), 'EINVAL')
        const pre = new AbortController()
        pre.abort()
        await expect(file.read(tail, 0, 10, 0, pre.signal)).rejects.toThrow()
      } finally {
        await file.close()
      }
      await expectCode(file.read(Buffer.alloc(10), 0, 10, 0), 'EINVAL')
      await file.close() // idempotent
      await expectCode(remote.openFile(`${d}/missing.bin`), 'ENOENT')
      await expectCode(remote.openFile(d), 'EISDIR')
      await expectCode(remote.openFile(''), 'EISDIR')
      await expectCode(remote.openFile('../x'), 'EACCES')
    })

    it(`lists thousands of entries, recursively or not, sorted, hiding temporaries`, async () => {
      const d = dir()
      const count = options.listCount ?? 1100
      const names = Array.from({ length: count }, (_, i) => `f${String(i).padStart(5, '0')}`)
      await mapLimit(names, options.writeConcurrency ?? 16, (name) => remote.writeFile(`${d}/${name}`, name))
      await remote.writeFile(`${d}/sub/deep/z.json`, '{}')
      await remote.writeFile(`${d}/sub/y.json`, '{}')
      await remote.writeFile(`${d}/.hidden.abc.tmp`, 'tmp')
      const flat = await remote.list(d)
      expect(flat.length).toBe(count + 1)
      expect(flat.filter((e) => !e.isDirectory).map((e) => e.path)).toEqual(names)
      expect(flat.find((e) => e.path === 'sub')).toEqual({ path: 'sub', isDirectory: true })
      const deep = await remote.list(d, { recursive: true })
      expect(deep.length).toBe(count + 2)
      expect(deep.slice(-2)).toEqual([
        { path: 'sub/deep/z.json', isDirectory: false },
        { path: 'sub/y.json', isDirectory: false },
      ])
      expect((await remote.list(`${d}/sub`)).map((e) => e.path)).toEqual(['deep', 'y.json'])
      expect((await remote.list(d, { includeHidden: true })).map((e) => e.path)).toContain('.hidden.abc.tmp')
      await expectCode(remote.list(`${d}/nope`), 'ENOENT')
    })

    it('renames files (replacing the target), unlinks, rmtrees, mkdirs', async () => {
      const d = dir()
      await remote.writeFile(`${d}/a`, 'A')
      await remote.writeFile(`${d}/b`, 'B')
      await remote.rename(`${d}/a`, `${d}/moved/c`)
      expect((await remote.readFile(`${d}/moved/c`)).toString()).toBe('A')
      await expectCode(remote.stat(`${d}/a`), 'ENOENT')
      await remote.rename(`${d}/b`, `${d}/moved/c`)
      expect((await remote.readFile(`${d}/moved/c`)).toString()).toBe('B')
      await expectCode(remote.rename(`${d}/nope`, `${d}/x`), 'ENOENT')
      await remote.unlink(`${d}/moved/c`)
      await expectCode(remote.unlink(`${d}/moved/c`), 'ENOENT')
      await remote.mkdir(`${d}/m/n/o`)
      await remote.mkdir(`${d}/m/n/o`)
      await remote.writeFile(`${d}/m/n/o/f`, 'f')
      await remote.writeFile(`${d}/m/g`, 'g')
      await remote.rmtree(`${d}/m`)
      await expectCode(remote.stat(`${d}/m/n/o/f`), 'ENOENT')
      await expectCode(remote.list(`${d}/m`), 'ENOENT')
      await remote.rmtree(`${d}/m`) // absent: no error
    })

    it('test() probes write/read/delete and reports speed; removeTemporaries cleans leftovers', async () => {
      const result = await remote.test({ sizeBytes: 2 * MiB })
      expect(result.sizeBytes).toBe(2 * MiB)
      expect(result.writeMiBps).toBeGreaterThan(0)
      expect(result.readMiBps).toBeGreaterThan(0)
      expect(result.latencyMs).toBeGreaterThanOrEqual(0)
      expect((await remote.list('', { includeHidden: true })).filter((e) => e.path.includes('backup-proxy-probe'))).toEqual([])
      const d = dir()
      await remote.writeFile(`${d}/.x.vhd.dead.tmp`, 'partial')
      await remote.writeFile(`${d}/sub/.y.json.dead.tmp`, 'partial')
      await remote.writeFile(`${d}/keep.vhd`, 'keep')
      expect(await remote.removeTemporaries(d)).toBe(2)
      expect((await remote.list(d, { recursive: true, includeHidden: true })).map((e) => e.path)).toEqual(['keep.vhd'])
    })

    it('refuses the remote root where a file is needed (EISDIR) and leaves no abort listener on the caller\'s signal', async () => {
      await expectCode(remote.writeFile('', 'x'), 'EISDIR')
      await expectCode(remote.createWriteStream('.'), 'EISDIR')
      await expectCode(remote.unlink(''), 'EISDIR')
      await expectCode(remote.rmtree('./'), 'EACCES')
      const d = dir()
      await remote.writeFile(`${d}/f.bin`, randomBytes(3000))
      const ac = new AbortController()
      for (let i = 0; i < 3; i++) {
        const whole = await readAll(await remote.createReadStream(`${d}/f.bin`, { signal: ac.signal }))
        expect(whole.length).toBe(3000)
        await remote.readFile(`${d}/f.bin`, { signal: ac.signal })
      }
      if (options.wholeFileReads !== true) await readAll(await remote.createReadStream(`${d}/f.bin`, { start: 10, end: 20, signal: ac.signal }))
      expect(getEventListeners(ac.signal, 'abort')).toEqual([])
      const pre = new AbortController()
      pre.abort()
      await expect(remote.createReadStream(`${d}/f.bin`, { signal: pre.signal })).rejects.toThrow()
      await expect(remote.readFile(`${d}/f.bin`, { signal: pre.signal })).rejects.toThrow()
    })

    it('emits op and bytes events for metrics', async () => {
      const ops: RemoteOpEvent[] = []
      const bytes: RemoteBytesEvent[] = []
      const onOp = (e: RemoteOpEvent) => ops.push(e)
      const onBytes = (e: RemoteBytesEvent) => bytes.push(e)
      remote.on('op', onOp)
      remote.on('bytes', onBytes)
      try {
        const d = dir()
        await remote.writeFile(`${d}/m.bin`, randomBytes(1000))
        await readAll(await remote.createReadStream(`${d}/m.bin`))
        await remote.stat(`${d}/missing`).catch(() => undefined)
      } finally {
        remote.off('op', onOp)
        remote.off('bytes', onBytes)
      }
      expect(bytes.filter((b) => b.direction === 'write').reduce((s, b) => s + b.bytes, 0)).toBe(1000)
      expect(bytes.filter((b) => b.direction === 'read').reduce((s, b) => s + b.bytes, 0)).toBe(1000)
      expect(ops.some((o) => o.op === 'stat' && !o.ok && o.code === 'ENOENT')).toBe(true)
      expect(ops.every((o) => o.durationMs >= 0)).toBe(true)
    })

    it('streams a large generated sparse disk with its expected size', async () => {
      const d = dir()
      const size = options.largeUploadBytes ?? (process.env.BACKUP_PROXY_TEST_LARGE === '1' ? 5.5 * 1024 * MiB : 48 * MiB + 1)
      const path = `${d}/large.vhd`
      await pipeline(zeroStream(size), await remote.createWriteStream(path, { expectedSizeBytes: size }))
      expect((await remote.stat(path)).size).toBe(size)
      if (options.wholeFileReads === true) {
        await expectCode(remote.createReadStream(path, { start: size - 100 }), 'E_ENCRYPTED_RANGE')
        let read = 0
        let zero = true
        for await (const c of (await remote.createReadStream(path)) as AsyncIterable<Buffer>) {
          read += c.length
          zero &&= c.every((b) => b === 0)
        }
        expect(read).toBe(size)
        expect(zero).toBe(true)
      } else {
        const tail = await readAll(await remote.createReadStream(path, { start: size - 100 }))
        expect(tail.equals(Buffer.alloc(100))).toBe(true)
      }
      await options.checkLargeUpload?.(remote, path, size)
      await remote.unlink(path)
    }, Math.max(timeout, 1_800_000))

    describe.skipIf(options.skipEncryption === true)('client-side encryption (Xen Orchestra format)', () => {
      const key = randomBytes(16).toString('hex') // 32 characters, as XO's form asks
      it('round-trips, stores nonce | ciphertext | tag, refuses ranges, a tampered file and a wrong key', async () => {
        const root = dir()
        const enc = createEncryptedRemote(remote, { key, root })
        await enc.open()
        expect(JSON.parse((await remote.readFile(`${root}/encryption.json`)).toString())).toEqual({ algorithm: 'chacha20-poly1305' })
        expect((await remote.stat(`${root}/metadata.json`)).size).toBe('{"random":"00000000-0000-0000-0000-000000000000"}'.length + 28)
        const data = randomBytes(2 * MiB + 999)
        await enc.writeFile('xo-vm-backups/vm/data/x.vhd/blocks/0/0', data)
        expect((await enc.readFile('xo-vm-backups/vm/data/x.vhd/blocks/0/0')).equals(data)).toBe(true)
        expect((await enc.stat('xo-vm-backups/vm/data/x.vhd/blocks/0/0')).size).toBe(data.length)
        const raw = await remote.readFile(`${root}/xo-vm-backups/vm/data/x.vhd/blocks/0/0`)
        expect(raw.length).toBe(data.length + 28)
        expect(raw.includes(data.subarray(0, 64))).toBe(false)
        // the format is XO's: ChaCha20-Poly1305 over the whole file, nonce first, tag last, no AAD
        const decipher = createDecipheriv('chacha20-poly1305', Buffer.from(key), raw.subarray(0, 12), { authTagLength: 16 }).setAuthTag(raw.subarray(raw.length - 16))
        expect(Buffer.concat([decipher.update(raw.subarray(12, raw.length - 16)), decipher.final()]).equals(data)).toBe(true)
        await expectCode(enc.createReadStream('xo-vm-backups/vm/data/x.vhd/blocks/0/0', { start: 10 }), 'E_ENCRYPTED_RANGE')
        expect(enc.forcesVhdDirectory).toBe(true)
        expect((await enc.list('', { recursive: true })).map((e) => e.path)).toEqual(['xo-vm-backups/vm/data/x.vhd/blocks/0/0']) // root files hidden
        await enc.close()

        // a wrong key on a remote with data: E_ENCRYPTION, and nothing written
        const before = await remote.list(root, { recursive: true, includeHidden: true })
        const metadataBefore = await remote.readFile(`${root}/metadata.json`)
        const wrong = createEncryptedRemote(remote, { key: randomBytes(16).toString('hex'), root })
        const error = await expectCode(wrong.open(), 'E_ENCRYPTION')
        expect(error.message).toMatch(/key does not match/)
        expect(error.message).not.toContain(key)
        expect(await remote.list(root, { recursive: true, includeHidden: true })).toEqual(before)
        expect((await remote.readFile(`${root}/metadata.json`)).equals(metadataBefore)).toBe(true)
        // a tampered file is an error, never garbage, read whole or streamed
        raw[raw.length - 20] = (raw[raw.length - 20] ?? 0) ^ 0xff
        await remote.writeFile(`${root}/xo-vm-backups/vm/data/x.vhd/blocks/0/0`, raw)
        const again = createEncryptedRemote(remote, { key, root })
        await again.open()
        await expectCode(again.readFile('xo-vm-backups/vm/data/x.vhd/blocks/0/0'), 'E_ENCRYPTION')
        await expectCode(readAll(await again.createReadStream('xo-vm-backups/vm/data/x.vhd/blocks/0/0')), 'E_ENCRYPTION')
        await again.close()
        expect(() => createEncryptedRemote(remote, { key: 'too short', root })).toThrow(/must be 32 bytes/)
      })
    })
  })
}

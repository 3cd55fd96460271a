/**
 * Property-based tests (fast-check, fixed seeds so CI runs the same cases): whatever an operator or an
 * orchestrator hands us — a task, a remote URL, a configuration (object or environment), a VHD stream —
 * the answer is a valid result or an error with a stable code (BackupProxyError), never an uncoded throw
 * and never a hang (each property has a time budget; vitest's timeout stops a hang). 1,000+ cases each.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { BackupProxyError } from '../../src/common/errors.js'
import { compileConfig, configFromEnv, configLeaves } from '../../src/config/index.js'
import { parseTask } from '../../src/queue/tasks.js'
import { parseRemoteUrl } from '../../src/remotes/url.js'
import { vhdChecksum } from '../../src/vhd/checksum.js'
import { openVhdStream } from '../../src/vhd/stream-parser.js'
import { chunked, makeFixture } from '../vhd/fixtures.js'
import { backupTask } from '../workers/fixtures.js'

const RUNS = 1000

/** A coded error, or rethrow so fast-check shrinks and reports the input. */
function expectCoded(error: unknown, allowed?: readonly string[]): void {
  if (!(error instanceof BackupProxyError) || typeof error.code !== 'string') throw error
  if (allowed !== undefined && !allowed.includes(error.code)) throw new Error(`unexpected code ${error.code} (expected ${allowed.join(' or ')}): ${error.message}`, { cause: error })
  if (error.message.trim() === '') throw new Error(`${error.code} without a message`)
}

function outcome(fn: () => unknown, allowed?: readonly string[]): 'ok' | 'coded' {
  try {
    fn()
    return 'ok'
  } catch (error) {
    expectCoded(error, allowed)
    return 'coded'
  }
}

/** Sets `value` at a path of a JSON-like object, as own properties only (a `__proto__` key must never reach Object.prototype). */
function setAt(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let at: Record<string, unknown> = target
  const own = (o: Record<string, unknown>, key: string, v: unknown) => Object.defineProperty(o, key, { value: v, enumerable: true, writable: true, configurable: true })
  for (const key of path.slice(0, -1)) {
    const next = Object.hasOwn(at, key) ? at[key] : undefined
    if (typeof next !== 'object' || next === null) own(at, key, {})
    at = Object.getOwnPropertyDescriptor(at, key)?.value as Record<string, unknown>
  }
  const last = path[path.length - 1]
  if (last !== undefined) Object.defineProperty(at, last, { value, enumerable: true, writable: true, configurable: true })
}

const keyArb = fc.oneof(
  fc.constantFrom('kind', 'job', 'id', 'mode', 'vms', 'uuid', 'settings', '', 'schedule', 'remotes', 'r1', 'url', 'options', 'xapis', 'x1', 'credentials', 'password', 'recordToXapi', '__proto__', 'constructor', 'prototype', 'exportRetention', 'timeout'),
  fc.string({ maxLength: 12 }),
)
const valueArb = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constantFrom(undefined, NaN, Infinity, -0, 1e308, 2 ** 53 + 1, '../../etc/passwd', 'file:///x', 's3://a:b@h/bucket', '\u0000'))

describe('property: parseTask', () => {
  it(`a valid task with random fields changed is parsed or refused with E_TASK_INVALID (${RUNS} cases)`, () => {
    const seen = { ok: 0, coded: 0 }
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.array(keyArb, { minLength: 1, maxLength: 4 }), valueArb), { minLength: 1, maxLength: 4 }), (edits) => {
        const task = structuredClone(backupTask()) as unknown as Record<string, unknown>
        for (const [path, value] of edits) setAt(task, path, value)
        seen[outcome(() => parseTask(task), ['E_TASK_INVALID'])]++
      }),
      { numRuns: RUNS, seed: 0x5eed_7a5c },
    )
    expect(seen.ok + seen.coded).toBe(RUNS)
    expect(seen.coded).toBeGreaterThan(0)
  })

  it(`any value at all is parsed or refused with E_TASK_INVALID (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(fc.oneof(fc.anything({ maxDepth: 4 }), fc.jsonValue({ maxDepth: 4 }).map((v) => ({ kind: 'backup.run', job: v }))), (input) => {
        outcome(() => parseTask(input), ['E_TASK_INVALID'])
      }),
      { numRuns: RUNS, seed: 0x7a5c_0002 },
    )
  })
})

describe('property: remote URLs', () => {
  const scheme = fc.constantFrom('file://', 'nfs://', 'smb://', 's3://', 's3+http://', 'ftp://', '', 'file:', 's3:///', 'smb:////')
  const part = fc.oneof(
    fc.string({ maxLength: 20 }),
    fc.constantFrom('/', ':', '@', '%', '%2', '%zz', '\\\\', '\\0', '?', '#', '[', ']', '..', 'user:pa%40ss@', 'host:99999', ':/export', 'bucket/dir', '?region=eu', '&useVhdDirectory=true', '\u0000', '\u202e'),
  )
  it(`any string is a parsed remote URL or E_REMOTE_URL (${RUNS} cases)`, () => {
    const seen = { ok: 0, coded: 0 }
    fc.assert(
      fc.property(scheme, fc.array(part, { maxLength: 8 }), (s, parts) => {
        seen[outcome(() => parseRemoteUrl(s + parts.join('')), ['E_REMOTE_URL'])]++
      }),
      { numRuns: RUNS, seed: 0x1234 },
    )
    expect(seen.ok).toBeGreaterThan(0)
    expect(seen.coded).toBeGreaterThan(0)
  })

  it(`arbitrary unicode and web URLs never throw uncoded (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 60 }), fc.webUrl({ withQueryParameters: true, withFragments: true })), (s) => {
        outcome(() => parseRemoteUrl(s), ['E_REMOTE_URL'])
      }),
      { numRuns: RUNS, seed: 0x0badc0de },
    )
  })
})

describe('property: configuration', () => {
  const leaves = configLeaves()
  it(`random values for every key are a valid config or E_CONFIG_INVALID (${RUNS} cases)`, () => {
    const leafArb = fc.constantFrom(...leaves)
    const value = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom('30s', '1h30m', '-5s', '512KiB', '2GiB', '5MB', '0', '1e9', 'true', 'false', '', 'redis://h:1', 'rediss://u:p@h', 'x'.repeat(300)))
    const seen = { ok: 0, coded: 0 }
    fc.assert(
      fc.property(fc.array(fc.tuple(leafArb, value), { maxLength: 4 }), fc.oneof(fc.constant(null), fc.constant(null), fc.tuple(keyArb, value)), (sets, extra) => {
        const raw: Record<string, unknown> = {}
        for (const [leaf, v] of sets) setAt(raw, leaf.path.split('.'), v)
        if (extra !== null) setAt(raw, [extra[0]], extra[1])
        try {
          compileConfig(raw)
          seen.ok++
        } catch (error) {
          expectCoded(error, ['E_CONFIG_INVALID'])
          seen.coded++
        }
      }),
      { numRuns: RUNS, seed: 0xc0f1_6000 },
    )
    expect(seen.ok).toBeGreaterThan(0)
    expect(seen.coded).toBeGreaterThan(0)
  })

  it(`random environment strings are a valid config or E_CONFIG_INVALID (${RUNS} cases)`, () => {
    const envs = leaves.map((l) => l.env).filter((e): e is string => typeof e === 'string')
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom(...envs, 'REDIS_URL'), fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('10s', '7', '-1', 'yes', 'no', '1,2,3', 'a,,b', '1GiB', 'redis://x:70000'))), (env) => {
        outcome(() => compileConfig(configFromEnv(env)), ['E_CONFIG_INVALID'])
      }),
      { numRuns: RUNS, seed: 0xe1f_0001 },
    )
  })
})

describe('property: VHD stream parser', () => {
  const base = makeFixture({ sizeBytes: 6 << 20, blocks: [0, 2], seed: 'prop' }).vhd
  /** Parses a whole stream; returns its block count or throws. */
  async function parse(buf: Buffer, chunk: number): Promise<number> {
    const stream = await openVhdStream(chunked(buf, chunk))
    let n = 0
    for await (const _ of stream.blocks()) n++
    return n
  }
  it(`damaged VHD streams (bytes, checksums fixed or not, truncation) parse or fail with a VHD code (${RUNS} cases)`, { timeout: 600_000 }, async () => {
    const seen = { ok: 0, coded: 0 }
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat({ max: base.length - 1 }), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
        fc.array(fc.tuple(fc.constantFrom(0, 512, 1024, 1536, 2048), fc.nat({ max: 511 }), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        fc.boolean(),
        fc.option(fc.nat({ max: base.length })),
        fc.constantFrom(511, 4096, 65536),
        async (anywhere, inStructures, fixChecksums, truncateAt, chunk) => {
          const buf = Buffer.from(base)
          for (const [at, v] of anywhere) buf[at] = v
          for (const [start, off, v] of inStructures) buf[start + off] = v
          if (fixChecksums) {
            buf.writeUInt32BE(vhdChecksum(buf.subarray(0, 512), 64), 64)
            buf.writeUInt32BE(vhdChecksum(buf.subarray(512, 1536), 36), 548)
            buf.copy(buf, buf.length - 512, 0, 512)
          }
          const input = truncateAt === null ? buf : buf.subarray(0, truncateAt)
          try {
            await parse(input, chunk)
            seen.ok++
          } catch (error) {
            expectCoded(error, ['E_VHD_CORRUPT', 'E_VHD_UNSUPPORTED'])
            seen.coded++
          }
        },
      ),
      { numRuns: RUNS, seed: 0x7d1d },
    )
    expect(seen.ok).toBeGreaterThan(0)
    expect(seen.coded).toBeGreaterThan(0)
  })
})

import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ConfigInvalidError } from '../../src/common/errors.js'
import { configLeaves, loadConfig } from '../../src/config/index.js'
import { parseDurationMs, parseSizeBytes } from '../../src/common/units.js'
import { useTempDir } from '../helpers/tmp.js'

const tmp = useTempDir()

describe('units', () => {
  it.each([
    ['1500', 1500],
    ['250ms', 250],
    ['30s', 30_000],
    ['1h30m', 5_400_000],
    ['2d', 172_800_000],
  ])('duration %s = %d ms', (input, ms) => expect(parseDurationMs(input)).toBe(ms))

  it.each([
    ['4096', 4096],
    ['512k', 524_288],
    ['2GiB', 2 * 1024 ** 3],
    ['5MB', 5_000_000],
    ['1.5 MiB', 1_572_864],
  ])('size %s = %d bytes', (input, n) => expect(parseSizeBytes(input)).toBe(n))

  it('rejects bad units with a message naming the value', () => {
    expect(() => parseDurationMs('30 parsecs')).toThrow(/parsecs/)
    expect(() => parseSizeBytes('2 GiBs')).toThrow(/GiBs/)
    expect(() => parseSizeBytes('-1')).toThrow(/not a size/)
  })
})

describe('config', () => {
  it('has defaults for everything', async () => {
    const c = await loadConfig({ env: {} })
    expect(c.workers.threads).toBe(2)
    expect(c.redis.url).toBe('redis://127.0.0.1:6379')
    expect(c.http.listen).toBe('127.0.0.1:9464')
    expect(c.backup.concurrency).toBe(2)
    expect(c.proxy.pools).toEqual([])
  })

  it('applies defaults < file < env < flags, with units', async () => {
    const file = join(tmp(), 'config.yaml')
    await writeFile(file, 'workers:\n  threads: 3\n  lockDurationMs: 2m\n  concurrency: 5\nbackup:\n  maxExportRate: 100MiB\nproxy:\n  id: site-a\n')
    const c = await loadConfig({
      file,
      env: { BACKUP_PROXY_WORKERS_THREADS: '4', BACKUP_PROXY_PROXY_POOLS: 'p1, p2', REDIS_URL: 'redis://10.0.0.1:6380' },
      flags: { workers: { threads: 6, concurrency: undefined } },
    })
    expect(c.workers.threads).toBe(6) // flag beats env beats file
    expect(c.workers.concurrency).toBe(5) // file (flag undefined = not given)
    expect(c.workers.lockDurationMs).toBe(120_000)
    expect(c.backup.maxExportRate).toBe(100 * 1024 * 1024)
    expect(c.proxy).toEqual({ id: 'site-a', pools: ['p1', 'p2'] })
    expect(c.redis.url).toBe('redis://10.0.0.1:6380')
  })

  it('reads JSON files too', async () => {
    const file = join(tmp(), 'config.json')
    await writeFile(file, JSON.stringify({ log: { level: 'debug' } }))
    expect((await loadConfig({ file, env: {} })).log.level).toBe('debug')
  })

  it('lists every problem, each naming its key and origin', async () => {
    const file = join(tmp(), 'bad.yaml')
    await writeFile(file, 'workers:\n  threads: 0\n  lockDurationMs: soon\nbogus:\n  x: 1\n')
    const error = await loadConfig({ file, env: { BACKUP_PROXY_HTTP_LISTEN: 'nowhere' } }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConfigInvalidError)
    const issues = (error as ConfigInvalidError).issues
    const paths = issues.map((i) => i.path)
    expect(paths).toContain('workers.threads')
    expect(paths).toContain('workers.lockDurationMs')
    expect(paths).toContain('bogus')
    expect(paths).toContain('http.listen')
    expect(issues.find((i) => i.path === 'http.listen')?.message).toContain('BACKUP_PROXY_HTTP_LISTEN')
    expect(issues.find((i) => i.path === 'workers.lockDurationMs')?.message).toMatch(/duration/)
    expect((error as ConfigInvalidError).code).toBe('E_CONFIG_INVALID')
  })

  it('refuses an XVA checksum digest XO cannot read, naming the accepted ones', async () => {
    expect((await loadConfig({ env: { BACKUP_PROXY_BACKUP_XVA_CHECKSUM: 'sha256' } })).backup.xvaChecksum).toBe('sha256')
    const error = await loadConfig({ env: { BACKUP_PROXY_BACKUP_XVA_CHECKSUM: 'sha1' } }).catch((e: unknown) => e)
    expect((error as ConfigInvalidError).code).toBe('E_CONFIG_INVALID')
    expect((error as ConfigInvalidError).issues.find((i) => i.path === 'backup.xvaChecksum')?.message).toMatch(/"auto", "md5" \(what XO writes\) or "sha256"/)
  })

  it('fails clearly on an unreadable or malformed file', async () => {
    await expect(loadConfig({ file: join(tmp(), 'missing.yaml'), env: {} })).rejects.toThrow(/cannot read/)
    const file = join(tmp(), 'broken.yaml')
    await writeFile(file, 'workers: [unclosed\n')
    await expect(loadConfig({ file, env: {} })).rejects.toThrow(/not valid YAML/)
  })

  it('derives one env name per key', () => {
    const leaves = configLeaves()
    expect(new Set(leaves.map((l) => l.env)).size).toBe(leaves.length)
    expect(leaves.find((l) => l.path === 'workers.lockDurationMs')?.env).toBe('BACKUP_PROXY_WORKERS_LOCK_DURATION_MS')
    for (const l of leaves) expect(l.description, l.path).not.toBe('')
  })
})

/**
 * Connection options per mode, from config `redis`: ACL user and password, TLS (scheme or `redis.tls`,
 * CA file), sentinels with their own credentials and TLS, cluster seeds and natMap; and the config
 * errors a wrong combination gets. (The servers themselves are exercised in cluster.test.ts and
 * sentinel.test.ts; these check what would be sent to them.)
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { compileConfig, type RawConfig } from '../../src/config/index.js'
import { ConfigInvalidError } from '../../src/common/errors.js'
import { clusterOptions, describeRedis, redisModeError, redisOptions } from '../../src/queue/redis.js'
import { useTempDir } from '../helpers/tmp.js'

const tmp = useTempDir('bp-redis-opts-')
const redis = (r: NonNullable<RawConfig['redis']>) => compileConfig({ redis: r }).redis

describe('Redis connection options', () => {
  it('sentinel: sentinels, master name, ACL users and TLS for both the sentinels and the master', async () => {
    const ca = join(tmp(), 'ca.pem')
    await writeFile(ca, 'not really a CA')
    const o = redisOptions(
      redis({
        mode: 'sentinel',
        url: 'rediss://app:secret@ignored:6379/3',
        sentinels: ['10.0.0.1:26379', '[fd00::2]:26380'],
        sentinelName: 'backups',
        sentinelUsername: 'sentinel-user',
        sentinelPassword: 'sentinel-pass',
        tlsCaFile: ca,
      }),
    )
    expect(o).toMatchObject({
      name: 'backups',
      role: 'master',
      db: 3,
      username: 'app',
      password: 'secret',
      sentinels: [{ host: '10.0.0.1', port: 26379 }, { host: 'fd00::2', port: 26380 }],
      sentinelUsername: 'sentinel-user',
      sentinelPassword: 'sentinel-pass',
      enableTLSForSentinelMode: true,
      maxRetriesPerRequest: null,
      failoverDetector: false,
    })
    expect(o.tls?.ca?.toString()).toBe('not really a CA')
    // the master's name comes from the sentinels: no fixed SNI name
    expect(o.tls?.servername).toBeUndefined()
    expect(o.sentinelTLS?.rejectUnauthorized).toBe(true)
    expect(o.reconnectOnError?.(new Error("READONLY You can't write against a read only replica."))).toBe(2)
    // TLS to the master only: ioredis needs enableTLSForSentinelMode for TLS to the master, sentinelTLS
    // alone is for the sentinels (sentinel-tls.test.ts ran into a plain connection to a TLS-only master)
    const plainSentinels = redisOptions(redis({ mode: 'sentinel', url: 'rediss://h', sentinels: ['s:1'], sentinelName: 'm', sentinelTls: false }))
    expect(plainSentinels.enableTLSForSentinelMode).toBe(true)
    expect(plainSentinels.tls).toBeDefined()
    expect(plainSentinels.sentinelTLS).toBeUndefined()
    // TLS to the sentinels only
    const plainMaster = redisOptions(redis({ mode: 'sentinel', url: 'redis://h', sentinels: ['s:1'], sentinelName: 'm', sentinelTls: true }))
    expect(plainMaster.enableTLSForSentinelMode).toBeUndefined()
    expect(plainMaster.tls).toBeUndefined()
    expect(plainMaster.sentinelTLS).toBeDefined()
    expect(describeRedis(redis({ mode: 'sentinel', sentinels: ['s:1'], sentinelName: 'm', sentinelPassword: 'p' }))).not.toContain('p@')
  })

  it('cluster: seeds, natMap (env form too), ACL user and TLS on every node; database 0 only', () => {
    const { seeds, options, nodeOptions } = clusterOptions(
      redis({ mode: 'cluster', url: 'rediss://ops:pw@unused', nodes: 'redis-a:7000, redis-b:7001', natMap: '10.0.0.5:7000=redis-a:7000,10.0.0.6:7001=redis-b:7001', tlsRejectUnauthorized: false }),
    )
    expect(seeds).toEqual([{ host: 'redis-a', port: 7000 }, { host: 'redis-b', port: 7001 }])
    expect(options.natMap).toEqual({ '10.0.0.5:7000': { host: 'redis-a', port: 7000 }, '10.0.0.6:7001': { host: 'redis-b', port: 7001 } })
    expect(nodeOptions).toMatchObject({ username: 'ops', password: 'pw', maxRetriesPerRequest: null, tls: { rejectUnauthorized: false, servername: 'redis-a' } })
    // no nodes: the URL's host is the seed; redis.tls overrides the scheme
    const fromUrl = clusterOptions(redis({ mode: 'cluster', url: 'redis://seed:7100', tls: true }))
    expect(fromUrl.seeds).toEqual([{ host: 'seed', port: 7100 }])
    expect(fromUrl.nodeOptions.tls).toBeDefined()
    expect(() => clusterOptions(redis({ mode: 'cluster', url: 'redis://seed:7100/2' }))).toThrow(/only database 0/)
  })

  it('refuses incomplete or contradictory settings with the key named', () => {
    const issues = (r: NonNullable<RawConfig['redis']>) => {
      try {
        compileConfig({ redis: r })
        return []
      } catch (error) {
        return (error as ConfigInvalidError).issues.map((i) => i.path)
      }
    }
    expect(issues({ mode: 'sentinel' })).toEqual(expect.arrayContaining(['redis.sentinels', 'redis.sentinelName']))
    expect(issues({ mode: 'cluster', prefix: '{bull}' })).toEqual(['redis.prefix'])
    expect(issues({ mode: 'cluster', nodes: ['no-port'] })).toEqual(['redis.nodes.0'])
    expect(issues({ mode: 'cluster', natMap: { 'a:1': 'b' } })).toEqual(['redis.natMap.a:1'])
    expect(issues({ mode: 'single', prefix: '{bull}' })).toEqual([])
    // settings the mode would ignore
    expect(issues({ mode: 'single', nodes: ['a:1'], natMap: { 'a:1': 'b:2' } })).toEqual(['redis.nodes', 'redis.natMap'])
    expect(issues({ mode: 'cluster', nodes: ['a:1'], sentinels: ['s:1'], sentinelName: 'm', sentinelPassword: 'p', sentinelTls: true })).toEqual(['redis.sentinels', 'redis.sentinelName', 'redis.sentinelPassword', 'redis.sentinelTls'])
    expect(issues({ mode: 'sentinel', sentinels: ['s:1'], sentinelName: 'm', sentinelUsername: 'u' })).toEqual(['redis.sentinelPassword'])
    // a CA file with TLS off would be ignored
    expect(issues({ url: 'redis://h', tlsCaFile: '/ca.pem' })).toEqual(['redis.tlsCaFile'])
    expect(issues({ url: 'redis://h', tls: true, tlsCaFile: '/ca.pem' })).toEqual([])
    expect(issues({ mode: 'sentinel', url: 'redis://h', sentinels: ['s:1'], sentinelName: 'm', sentinelTls: true, tlsCaFile: '/ca.pem' })).toEqual([])
  })

  it('turns MOVED / CROSSSLOT replies into E_REDIS_MODE saying to set mode cluster', () => {
    const single = redis({ url: 'redis://node-1:7000' })
    expect(redisModeError(new Error('MOVED 3999 127.0.0.1:7001'), single)?.code).toBe('E_REDIS_MODE')
    expect(redisModeError(new Error('MOVED 3999 127.0.0.1:7001'), single)?.message).toMatch(/redis\.mode: cluster/)
    expect(redisModeError(new Error("CROSSSLOT Keys in request don't hash to the same slot"), single)?.code).toBe('E_REDIS_MODE')
    expect(redisModeError(new Error('ERR unknown command'), single)).toBeUndefined()
    expect(redisModeError(new Error('ERR This instance has cluster support disabled'), redis({ mode: 'cluster', nodes: ['a:1'] }))?.message).toMatch(/redis\.mode: single/)
  })
})

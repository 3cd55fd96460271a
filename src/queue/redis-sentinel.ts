/**
 * Sentinel mode, checked before the first connection: asks each sentinel (with the sentinels' own
 * credentials and TLS) for the address of `redis.sentinelName`. ioredis alone would retry an unknown
 * master name forever with a vague "all sentinels are unreachable"; this turns it into E_REDIS_SENTINEL
 * listing the names the sentinels do monitor, and an unreachable set of sentinels into E_REDIS.
 * `sentinelMasterAnswers()` tells whether the master they name now answers (a failover is over).
 */
import { BackupProxyError } from '../common/errors.js'
import { ioredis } from './libs.js'
import { redisOptions, type RedisConfig } from './redis-options.js'

export async function checkSentinels(config: RedisConfig): Promise<{ host: string; port: number }> {
  const o = redisOptions(config)
  const name = o.name ?? ''
  const known = new Set<string>()
  const failures: string[] = []
  for (const s of o.sentinels ?? []) {
    const client = new (ioredis().Redis)({
      host: s.host,
      port: s.port,
      ...(o.sentinelUsername === undefined ? {} : { username: o.sentinelUsername }),
      ...(o.sentinelPassword === undefined ? {} : { password: o.sentinelPassword }),
      ...(o.sentinelTLS === undefined ? {} : { tls: o.sentinelTLS }),
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      connectTimeout: 5000,
    })
    // why the connection failed (WRONGPASS, a certificate) comes as an `error` event; the command
    // itself only says "Connection is closed"
    let reason: Error | undefined
    client.on('error', (error: Error) => (reason ??= error))
    try {
      await client.connect()
      const addr = (await client.call('SENTINEL', 'get-master-addr-by-name', name)) as [string, string] | null
      if (addr !== null) return { host: addr[0], port: Number(addr[1]) }
      const masters = (await client.call('SENTINEL', 'masters')) as string[][]
      for (const m of masters) {
        const i = m.indexOf('name')
        if (i >= 0 && m[i + 1] !== undefined) known.add(m[i + 1]!)
      }
    } catch (error) {
      const why = reason !== undefined && reason.message !== (error as Error).message ? `${(error as Error).message} (${reason.message})` : (error as Error).message
      failures.push(`${s.host}:${s.port}: ${why}`)
    } finally {
      client.disconnect()
    }
  }
  if (failures.length === (o.sentinels ?? []).length) {
    throw new BackupProxyError('E_REDIS', `no sentinel answered (${failures.join('; ')}); check redis.sentinels, redis.sentinelUsername/sentinelPassword and redis.sentinelTls`, { fields: { mode: 'sentinel' } })
  }
  throw new BackupProxyError(
    'E_REDIS_SENTINEL',
    `the sentinels know no master named "${name}" (they monitor: ${known.size === 0 ? 'none' : [...known].sort().join(', ')}); set redis.sentinelName to the name in their "sentinel monitor <name> ..." line`,
    { fields: { sentinelName: name, known: [...known].sort() } },
  )
}

/**
 * True when the sentinels name a master and it answers as one, reached as the proxy reaches it (natMap,
 * credentials, TLS); false on any failure.
 */
export async function sentinelMasterAnswers(config: RedisConfig): Promise<boolean> {
  let addr: { host: string; port: number }
  try {
    addr = await checkSentinels(config)
  } catch {
    return false
  }
  const o = redisOptions(config)
  const key = `${addr.host}:${addr.port}`
  const mapped = typeof o.natMap === 'function' ? (o.natMap(key) ?? addr) : (o.natMap?.[key] ?? addr)
  const probe = new (ioredis().Redis)({
    host: mapped.host,
    port: mapped.port,
    ...(o.username === undefined ? {} : { username: o.username }),
    ...(o.password === undefined ? {} : { password: o.password }),
    ...(o.enableTLSForSentinelMode === true && o.tls !== undefined ? { tls: o.tls } : {}),
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 5000,
  })
  probe.on('error', () => undefined)
  try {
    await probe.connect()
    const role = (await probe.call('ROLE')) as unknown[]
    return role[0] === 'master'
  } catch {
    return false
  } finally {
    probe.disconnect()
  }
}

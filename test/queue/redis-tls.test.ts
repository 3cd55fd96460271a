/**
 * TLS for real (single mode): a redis-server with a TLS port only and a certificate signed by a CA made
 * by the test (openssl). With `redis.tlsCaFile` a job runs through it; without the CA the certificate is
 * refused (E_REDIS). Cluster and Sentinel over TLS: cluster-tls.test.ts, sentinel-tls.test.ts.
 */
import { describe, expect, it } from 'vitest'
import type { BackupProxyError } from '../../src/common/errors.js'
import { EnqueueClient } from '../../src/queue/client.js'
import { checkRedis, createRedis } from '../../src/queue/redis.js'
import { getFreePort, waitFor } from '../helpers/ports.js'
import { startDaemon } from '../helpers/process.js'
import { makeTestCerts } from '../services/redis-secure.js'
import { useTempDir } from '../helpers/tmp.js'
import { sealKey, uid } from '../workers/fixtures.js'
import { expectEachSucceededOnce, modeConfig, RunCounter, smallTask } from './modes.js'

const tmp = useTempDir('bp-redis-tls-')

describe('Redis over TLS', () => {
  it('runs a job with the CA given in redis.tlsCaFile; refuses the certificate without it (E_REDIS naming the certificate problem)', async () => {
    const dir = tmp()
    const certs = await makeTestCerts(dir)
    const port = await getFreePort()
    const server = startDaemon('redis-server', [
      '--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no',
      '--tls-cert-file', certs.cert, '--tls-key-file', certs.key, '--tls-ca-cert-file', certs.ca, '--tls-auth-clients', 'no',
      '--maxmemory-policy', 'noeviction',
    ])
    try {
      const tls = { url: `rediss://localhost:${port}`, tlsCaFile: certs.ca }
      await waitFor(`redis TLS on ${port}: ${server.output()}`, async () => {
        const r = createRedis(modeConfig(tls, { id: 'probe' }).redis)
        r.on('error', () => undefined)
        try {
          return (await checkRedis(r, modeConfig(tls, { id: 'probe' }).redis)).policy === 'noeviction'
        } finally {
          r.disconnect()
        }
      })
      const id = uid('p')
      const counter = new RunCounter()
      const proxy = await counter.proxy(modeConfig(tls, { id }))
      const c = new EnqueueClient({ redis: modeConfig(tls, { id: 'client' }).redis, sealKey })
      try {
        await expectEachSucceededOnce([await c.enqueue({ proxy: id }, smallTask(dir))], counter)
      } finally {
        await proxy.shutdown()
        await c.close()
      }
      const untrusted = modeConfig({ url: `rediss://localhost:${port}` }, { id: uid('p') }).redis
      const r = createRedis(untrusted)
      r.on('error', () => undefined)
      try {
        const error = await checkRedis(r, untrusted).catch((e: unknown) => e)
        expect((error as BackupProxyError).code).toBe('E_REDIS')
        expect((error as BackupProxyError).message).toMatch(/cannot reach Redis at rediss:\/\/localhost.*certificate/)
      } finally {
        r.disconnect()
      }
    } finally {
      await server.stop()
    }
  })
})

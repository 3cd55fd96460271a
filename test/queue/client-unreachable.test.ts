/**
 * The enqueue client with Redis unreachable: enqueue and cancel fail with E_REDIS naming the Redis URL
 * (its password removed) and the cause, instead of ioredis' uncoded "Connection is closed.". Needs no
 * server: the URL points at a free port nobody listens on.
 */
import { describe, expect, it } from 'vitest'
import { BackupProxyError } from '../../src/common/errors.js'
import { getFreePort } from '../helpers/ports.js'
import { backupTask, client, testConfig } from '../workers/fixtures.js'

describe('enqueue client, Redis unreachable', () => {
  it('enqueue and cancel fail with E_REDIS naming the URL without its password', async () => {
    const port = await getFreePort()
    const config = testConfig(`redis://ops:Sup3rS3cret@127.0.0.1:${port}`)
    const c = client(config)
    try {
      for (const attempt of [() => c.enqueue({ proxy: 'p1' }, backupTask()), () => c.cancel({ proxy: 'p1' }, 'job-1')]) {
        const error: unknown = await attempt().then(
          () => undefined,
          (e: unknown) => e,
        )
        expect(error).toBeInstanceOf(BackupProxyError)
        const e = error as BackupProxyError
        expect(e.code).toBe('E_REDIS')
        expect(e.message).toContain(`redis://ops@127.0.0.1:${port}`)
        expect(e.message).toMatch(/ECONNREFUSED/)
        expect(e.message).not.toContain('Sup3rS3cret')
      }
    } finally {
      await c.close()
    }
  })
})

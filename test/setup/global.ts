/**
 * Vitest global setup: starts the real servers the suite talks to, once per run, and hands their
 * addresses to tests through `inject()`. Which ones start is chosen by BACKUP_PROXY_TEST_SERVICES
 * (comma-separated; default all: redis,s3,smb,nfs) so a developer iterating on one module can skip the
 * slow ones. They are stopped in reverse order at the end of the run, even on failure.
 */
import type { TestProject } from 'vitest/node'
import { startRedis } from '../services/redis.js'
import { startS3, type S3Service } from '../services/s3.js'
import { startSMB, type SMBService } from '../services/smb.js'
import { startNFS, type NFSService } from '../services/nfs.js'

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string
    s3Url: string | null
    smbUrl: string | null
    nfsUrl: string | null
  }
}

const ALL = ['redis', 's3', 'smb', 'nfs'] as const

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const wanted = new Set((process.env.BACKUP_PROXY_TEST_SERVICES ?? ALL.join(',')).split(',').map((s) => s.trim()))
  const stops: (() => Promise<void>)[] = []
  const teardown = async () => {
    for (const stop of stops.reverse()) {
      try {
        await stop()
      } catch (error) {
        console.error('test service teardown failed:', error)
      }
    }
  }
  try {
    const started = await Promise.allSettled([
      startRedis(),
      wanted.has('s3') ? startS3() : Promise.resolve(null),
      wanted.has('smb') ? startSMB() : Promise.resolve(null),
      wanted.has('nfs') ? startNFS() : Promise.resolve(null),
    ])
    for (const s of started) if (s.status === 'fulfilled' && s.value !== null) stops.push('destroy' in s.value ? s.value.destroy : s.value.stop)
    const failed = started.filter((s): s is PromiseRejectedResult => s.status === 'rejected')
    if (failed.length > 0) throw new AggregateError(failed.map((f) => f.reason as unknown), 'test services failed to start (run scripts/install-test-deps.sh first?)')
    const [redis, s3, smb, nfs] = started.map((s) => (s as PromiseFulfilledResult<unknown>).value) as [
      Awaited<ReturnType<typeof startRedis>>, S3Service | null, SMBService | null, NFSService | null,
    ]
    project.provide('redisUrl', redis.url)
    project.provide('s3Url', s3?.url ?? null)
    project.provide('smbUrl', smb?.url ?? null)
    project.provide('nfsUrl', nfs?.url ?? null)
  } catch (error) {
    await teardown()
    throw error
  }
  return teardown
}

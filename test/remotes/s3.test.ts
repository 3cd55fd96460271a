/**
 * The conformance suite on a real S3-compatible store: OpenStack Swift + s3api, started by the test
 * setup (test/services/s3.ts). Plus S3 specifics: no orphan multipart upload after an abort (checked
 * with ListMultipartUploads), the part size math, and error mapping.
 */
import { HeadObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3'
import { randomBytes } from 'node:crypto'
import { describe, expect, inject, it } from 'vitest'
import { createRemote } from '../../src/remotes/index.js'
import type { Remote } from '../../src/remotes/remote.js'
import { S3Remote } from '../../src/remotes/s3.js'
import { choosePartSizeBytes, MAX_PARTS } from '../../src/remotes/s3-writer.js'
import { formatRemoteUrl, parseRemoteUrl } from '../../src/remotes/url.js'
import type { S3RemoteUrl } from '../../src/remotes/url-types.js'
import { describeRemoteConformance, expectCode } from './conformance.js'

const MiB = 1024 * 1024
const s3Url = inject('s3Url')

function asS3(remote: Remote): S3Remote {
  if (!(remote instanceof S3Remote)) throw new Error('not an S3 remote')
  return remote
}

async function pendingUploads(remote: S3Remote, key: string): Promise<number> {
  const res = await remote.client.send(new ListMultipartUploadsCommand({ Bucket: remote.bucket, Prefix: key }))
  return (res.Uploads ?? []).filter((u) => u.Key === key).length
}

describe('S3 part size', () => {
  it('never needs more than 10,000 parts and never goes below 5 MiB', () => {
    expect(choosePartSizeBytes(undefined)).toBe(5 * MiB)
    expect(choosePartSizeBytes(10 * MiB, 16 * MiB)).toBe(16 * MiB)
    const fiveAndHalfGiB = 5.5 * 1024 * MiB
    expect(choosePartSizeBytes(fiveAndHalfGiB)).toBe(5 * MiB) // 1127 parts: more than Swift's default 1000
    for (const size of [2 * 1024 ** 4, 5 * 1024 ** 4, 48 * 1024 ** 4]) {
      const part = choosePartSizeBytes(size)
      expect(Math.ceil(size / part)).toBeLessThanOrEqual(MAX_PARTS)
      expect(part % MiB).toBe(0)
    }
    expect(() => choosePartSizeBytes(60 * 1024 ** 4)).toThrow(/5 GiB/)
  })
})

describe.skipIf(s3Url === null)('S3 on Swift', () => {
  const url = parseRemoteUrl(s3Url ?? 's3://a:b@h/b') as S3RemoteUrl
  const make = async () => {
    await Promise.resolve()
    // 5 MiB parts so the conformance writes go multipart
    return createRemote(url, { uploadPartSizeBytes: 5 * MiB, uploadConcurrency: 3 })
  }

  describeRemoteConformance('s3 (Swift s3api)', make, {
    checkNoLeftovers: async (remote, path) => {
      const s3 = asS3(remote)
      expect(await pendingUploads(s3, `${s3.prefix}/${path}`)).toBe(0)
    },
    checkLargeUpload: async (remote, path, size) => {
      const s3 = asS3(remote)
      const head = await s3.client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: `${s3.prefix}/${path}` }))
      // a multipart ETag is "<md5>-<parts>"
      const parts = Number(/-(\d+)"?$/.exec(head.ETag ?? '')?.[1])
      expect(parts).toBe(Math.ceil(size / s3.partSizeFor(size)))
      expect(parts).toBeLessThanOrEqual(MAX_PARTS)
    },
  })

  it('a writer destroyed while parts are in flight leaves no object and no multipart upload', async () => {
    const remote = asS3(await make())
    await remote.open()
    const path = `fail-${randomBytes(3).toString('hex')}/x.vhd`
    const out = await remote.createWriteStream(path, { expectedSizeBytes: 30 * MiB })
    const errors: Error[] = []
    out.on('error', (e) => errors.push(e))
    out.write(randomBytes(11 * MiB)) // two parts under way
    await new Promise((r) => setTimeout(r, 200))
    // a crash of the producer while parts are in flight: the writer must abort and clean up
    out.destroy(new Error('simulated crash'))
    await new Promise<void>((resolve) => (out.closed ? resolve() : out.once('close', () => resolve())))
    expect(errors.map((e) => e.message)).toContain('simulated crash')
    await expectCode(remote.stat(path), 'ENOENT')
    expect(await pendingUploads(remote, `${remote.prefix}/${path}`)).toBe(0)
    await remote.close()
  })

  it('removeTemporaries aborts multipart uploads a killed writer left', async () => {
    const remote = asS3(await make())
    await remote.open()
    const dir = `orphans-${randomBytes(3).toString('hex')}`
    const { CreateMultipartUploadCommand } = await import('@aws-sdk/client-s3')
    await remote.client.send(new CreateMultipartUploadCommand({ Bucket: remote.bucket, Key: `${remote.prefix}/${dir}/a.vhd` }))
    expect(await pendingUploads(remote, `${remote.prefix}/${dir}/a.vhd`)).toBe(1)
    expect(await remote.removeTemporaries(dir)).toBe(1)
    expect(await pendingUploads(remote, `${remote.prefix}/${dir}/a.vhd`)).toBe(0)
    await remote.close()
  })

  it('maps a wrong secret to EACCES and a missing bucket to ENOENT, without leaking the secret', async () => {
    const wrong = createRemote(formatRemoteUrl({ ...url, secretAccessKey: 'not-the-secret' }), { s3MaxAttempts: 1 })
    const e = await expectCode(wrong.open(), 'EACCES')
    expect(e.message).not.toContain('not-the-secret')
    await wrong.close()
    const noBucket = createRemote({ ...url, bucket: `nope${randomBytes(3).toString('hex')}` }, { s3MaxAttempts: 1 })
    await expectCode(noBucket.open(), 'ENOENT')
    await noBucket.close()
  })

  // the same contract through client-side encryption (XO's whole-file format): only ranged reads differ
  describeRemoteConformance(
    's3 (Swift s3api), encrypted',
    async () => {
      const root = `enc-conformance-${randomBytes(3).toString('hex')}`
      const remote = createRemote({ ...url, path: `${url.path}/${root}` }, { uploadPartSizeBytes: 5 * MiB, uploadConcurrency: 3, encryptionKey: 'conformance-key-0123456789abcdef' })
      await Promise.resolve()
      return remote
    },
    { wholeFileReads: true, skipEncryption: true },
  )

  it('the encrypted remote works over S3 through createRemote', async () => {
    const root = `enc-${randomBytes(3).toString('hex')}`
    const remote = createRemote({ ...url, path: `${url.path}/${root}` }, { encryptionKey: 'k'.repeat(32) })
    await remote.open()
    await remote.writeFile('a/b.json', '{"x":1}')
    expect((await remote.readFile('a/b.json')).toString()).toBe('{"x":1}')
    await remote.close()
    const plain = asS3(createRemote(url))
    const raw = await plain.readFile(`${root}/a/b.json`)
    expect(raw.toString('latin1')).not.toContain('"x":1')
    await plain.rmtree(root)
    await plain.close()
  })
})

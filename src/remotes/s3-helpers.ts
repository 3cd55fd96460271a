/**
 * Small helpers of the S3 remote (s3.ts): the Content-MD5 that some servers require on DeleteObjects,
 * truncating a body that is longer than the range asked for, recognizing NotImplemented answers, and
 * deleting keys one by one with bounded concurrency where DeleteObjects is missing.
 */
import type { DeleteObjectsCommand } from '@aws-sdk/client-s3'
import { createHash } from 'node:crypto'

/**
 * S3 requires Content-MD5 on DeleteObjects; recent SDKs send a CRC32 checksum instead, which AWS accepts
 * but Swift's s3api (and older S3-compatible servers) refuse. Add the MD5 of the serialized body.
 */
export function withContentMd5(command: DeleteObjectsCommand): DeleteObjectsCommand {
  command.middlewareStack.add(
    (next) => async (args) => {
      const request = args.request as { headers?: Record<string, string>; body?: unknown }
      if (request.headers !== undefined && (typeof request.body === 'string' || request.body instanceof Uint8Array)) {
        request.headers['content-md5'] = createHash('md5').update(request.body).digest('base64')
      }
      return next(args)
    },
    { step: 'build', name: 'backupProxyContentMd5' },
  )
  return command
}

/** Passes the first `n` bytes, drops the rest. */
export function truncate(n: number): (source: AsyncIterable<Buffer>) => AsyncGenerator<Buffer> {
  return async function* (source) {
    let left = n
    for await (const chunk of source) {
      if (left <= 0) continue
      const piece = chunk.length <= left ? chunk : chunk.subarray(0, left)
      left -= piece.length
      yield piece
    }
  }
}

export function isNotImplemented(error: unknown): boolean {
  return (error as { name?: unknown }).name === 'NotImplemented' || (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 501
}

export async function deleteEach(keys: string[], limit: number, fn: (key: string) => Promise<void>): Promise<void> {
  let i = 0
  await Promise.all(
    Array.from({ length: Math.min(limit, keys.length) }, async () => {
      while (i < keys.length) await fn(keys[i++] as string)
    }),
  )
}

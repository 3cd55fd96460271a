/**
 * The AWS SDK, loaded on first use: `@aws-sdk/client-s3` and `@aws-sdk/lib-storage` are ~20 MiB of RSS
 * and ~0.5 s of CPU to load, in every thread that imports them. The S3 remote is created synchronously
 * (createRemote) like every remote, but asks for the SDK only when it talks to S3 (its first request):
 * a proxy, a stream thread or a CLI command that never uses an S3 remote never loads it.
 *
 * The SDK is imported by package name (plain Node resolution, no TypeScript loader involved), so this
 * works the same in a stream thread run from sources under tsx and in the compiled proxy.
 */
import type * as ClientS3 from '@aws-sdk/client-s3'
import type * as LibStorage from '@aws-sdk/lib-storage'

export interface S3Sdk {
  /** `@aws-sdk/client-s3`: S3Client and the commands */
  s3: typeof ClientS3
  /** `@aws-sdk/lib-storage`: Upload (multipart uploads) */
  storage: typeof LibStorage
}

let loading: Promise<S3Sdk> | undefined

/** The SDK modules, imported once per thread (a failed import is retried on the next call). */
export function loadS3Sdk(): Promise<S3Sdk> {
  loading ??= Promise.all([import('@aws-sdk/client-s3'), import('@aws-sdk/lib-storage')]).then(
    ([s3, storage]) => ({ s3, storage }),
    (error: unknown) => {
      loading = undefined
      throw error
    },
  )
  return loading
}

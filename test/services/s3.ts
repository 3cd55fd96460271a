/**
 * Test server: S3 (OpenStack Swift with s3api, Debian packages). Started once per test run by test/setup/global.ts; see ../shared/notes/test-servers.md
 * for how it runs here. Returns null while not implemented (tests that need it then fail loudly).
 */
export interface S3Service {
  /** remote URL in XO format, pointing at a fresh empty directory for the run */
  url: string
  stop: () => Promise<void>
}

export async function startS3(): Promise<S3Service | null> {
  await Promise.resolve()
  return null
}

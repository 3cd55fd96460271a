/**
 * Test server: NFS (NFS-Ganesha + rpcbind in a private network namespace). Started once per test run by test/setup/global.ts; see ../shared/notes/test-servers.md
 * for how it runs here. Returns null while not implemented (tests that need it then fail loudly).
 */
export interface NFSService {
  /** remote URL in XO format, pointing at a fresh empty directory for the run */
  url: string
  stop: () => Promise<void>
}

export async function startNFS(): Promise<NFSService | null> {
  await Promise.resolve()
  return null
}

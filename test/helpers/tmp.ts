/** Temp dirs that are always removed: after the file's tests (useTempDir) or by the caller (makeTempDir). */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll } from 'vitest'

export async function makeTempDir(prefix = 'bp-test-'): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix))
  return { path, remove: () => rm(path, { recursive: true, force: true }) }
}

/** A temp dir for the current test file (or describe block), created before its tests and removed after. */
export function useTempDir(prefix = 'bp-test-'): () => string {
  let dir: string | undefined
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix))
  })
  afterAll(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })
  return () => {
    if (dir === undefined) throw new Error('useTempDir: the directory exists only inside tests and hooks')
    return dir
  }
}

/** Temp dirs that are always removed: after the file's tests (useTempDir) or by the caller (makeTempDir). */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll } from 'vitest'

export async function makeTempDir(prefix = 'bp-test-'): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix))
  return { path, remove: () => rm(path, { recursive: true, force: true }) }
}

/** A temp dir for the current test file, removed after its tests. Call at module or describe level. */
export function useTempDir(prefix = 'bp-test-'): () => string {
  let dir: string | undefined
  const ready = makeTempDir(prefix).then((d) => {
    dir = d.path
    afterAll(d.remove)
    return d
  })
  void ready
  return () => {
    if (dir === undefined) throw new Error('useTempDir: not ready yet; use it inside tests or hooks')
    return dir
  }
}

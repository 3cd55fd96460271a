/**
 * The remote probe behind `Remote.test()`: writes a file of random data through the atomic write path,
 * reads it back and compares, stats it (latency) and deletes it, reporting speeds. It uses only the
 * public contract, so it measures what backups see on every kind of remote.
 */
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { finished } from 'node:stream/promises'
import { RemoteError } from '../common/errors.js'
import type { Remote } from './remote.js'
import type { RemoteTestResult } from './remote-types.js'

/** Writes `sizeBytes` of random data to `path` and returns the written data's digest and the duration. */
async function writeProbe(remote: Remote, path: string, sizeBytes: number, signal: AbortSignal | undefined): Promise<{ digest: Buffer; ms: number }> {
  const chunk = randomBytes(Math.min(sizeBytes, 1024 * 1024))
  const written = createHash('sha256')
  const t0 = performance.now()
  const out = await remote.createWriteStream(path, { expectedSizeBytes: sizeBytes, ...(signal === undefined ? {} : { signal }) })
  for (let left = sizeBytes; left > 0; ) {
    const part = left >= chunk.length ? chunk : chunk.subarray(0, left)
    written.update(part)
    left -= part.length
    if (!out.write(part)) await once(out, 'drain')
  }
  out.end()
  await finished(out)
  return { digest: written.digest(), ms: performance.now() - t0 }
}

/** Reads `path` back; fails with EIO when it differs from what was written. Returns the duration. */
async function readProbe(remote: Remote, path: string, sizeBytes: number, digest: Buffer, signal: AbortSignal | undefined): Promise<number> {
  const t1 = performance.now()
  const read = createHash('sha256')
  let readBytes = 0
  const input = await remote.createReadStream(path, signal === undefined ? {} : { signal })
  for await (const data of input as AsyncIterable<Buffer>) {
    read.update(data)
    readBytes += data.length
  }
  const ms = performance.now() - t1
  if (readBytes !== sizeBytes || !read.digest().equals(digest)) {
    throw new RemoteError('EIO', `test(): ${remote.displayUrl} returned different data than was written (${readBytes} of ${sizeBytes} bytes read): the storage is corrupting data`)
  }
  return ms
}

/** Probes `path` (a temporary name, so a crash leaves something `removeTemporaries` cleans). */
export async function probeRemote(remote: Remote, path: string, sizeBytes: number, signal: AbortSignal | undefined): Promise<RemoteTestResult> {
  try {
    const { digest, ms: writeDurationMs } = await writeProbe(remote, path, sizeBytes, signal)
    const readDurationMs = await readProbe(remote, path, sizeBytes, digest, signal)
    const t2 = performance.now()
    await remote.stat(path)
    const latencyMs = performance.now() - t2
    await remote.unlink(path)
    const mib = sizeBytes / (1024 * 1024)
    return { sizeBytes, writeDurationMs, readDurationMs, writeMiBps: mib / (writeDurationMs / 1000), readMiBps: mib / (readDurationMs / 1000), latencyMs }
  } catch (error) {
    // best effort: the probe may not exist (failed before publish); the original error is what matters
    await remote.unlink(path).catch(() => undefined)
    throw error
  }
}

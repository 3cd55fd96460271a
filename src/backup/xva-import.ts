/**
 * The transfer half of restoring a full backup (XVA), as run inside a pool thread (`backup.restoreXva`,
 * xva.thread.ts) or inline: the XVA is read from the remote and uploaded to XAPI's `PUT /import/` (as
 * XO's ImportVmBackup does with readFullVmBackup + VM_import: compressed or not, XAPI decompresses), its
 * digest (MD5, or SHA-256/512: the algorithm the file names, src/xva/checksum.ts) checked against XO's
 * `.xva.checksum` while it streams. The last piece read is held back until the
 * whole file hashed: a file that does not match never reaches XAPI whole, the upload is broken off and
 * XAPI's import fails — it keeps nothing of a failed import — and the restore fails with E_XVA_CORRUPT.
 * XAPI itself checks every chunk's xxHash/SHA-1 (a corrupt XVA without checksum file, e.g. on an
 * encrypted remote, is refused by it: `IMPORT_ERROR`, reported as E_XVA_CORRUPT by the caller).
 */
import { Transform, type TransformCallback } from 'node:stream'
import { BackupProxyError } from '../common/errors.js'
import { createRemote } from '../remotes/index.js'
import type { Remote } from '../remotes/remote.js'
import type { RemoteOptions } from '../remotes/url-types.js'
import type { XvaImportDescriptor } from '../xapi/descriptors.js'
import { ChecksumCheck, parseChecksum } from '../xva/checksum.js'
import { putXvaImport } from '../xva/http.js'
import { countSentBytes } from './disk-import.js'

export interface XvaImportInput {
  remote: { url: string; options: RemoteOptions }
  /** remote-root path of the `.xva` */
  xvaPath: string
  sizeBytes: number
  /** XO's checksum (`$1$$<md5 hex>`, `$5$$<sha256 hex>`…: parseXvaChecksum), when the file has one */
  checksum?: string
  descriptor: XvaImportDescriptor
}

export interface XvaImportResult {
  sentBytes: number
  durationMs: number
}

export type XvaImporter = (input: XvaImportInput, options: { signal: AbortSignal; onProgress?: (p: { sentBytes: number; totalBytes: number }) => void }) => Promise<XvaImportResult>

/** Passes bytes through, holding the last chunk back until the whole stream's digest matched `expected`. */
class ChecksumGate extends Transform {
  private readonly check: ChecksumCheck | undefined
  private held: Buffer | undefined
  constructor(
    expected: string | undefined,
    private readonly what: string,
  ) {
    super()
    this.check = expected === undefined ? undefined : ChecksumCheck.of(expected)
    if (expected !== undefined && this.check === undefined) throw new BackupProxyError('E_XVA_CORRUPT', `${what}.checksum is not a checksum in Xen Orchestra's format: restore another backup point`, { fields: { retryable: false } })
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    this.check?.update(chunk)
    const previous = this.held
    this.held = chunk
    callback(null, previous)
  }

  override _flush(callback: TransformCallback): void {
    const check = this.check
    const actual = check?.actual()
    if (check !== undefined && actual !== check.expected) {
      callback(new BackupProxyError('E_XVA_CORRUPT', `${this.what} is corrupt: its ${check.algorithm.toUpperCase()} checksum is ${actual}, its checksum file says ${check.expected}; restore another backup point (nothing was imported)`, { fields: { retryable: false } }))
      return
    }
    callback(null, this.held)
  }
}

/** Parses XO's checksum file content (`$1$$<md5 hex>`, `$5$$<sha256 hex>`, `$6$$<sha512 hex>`); undefined for anything else. */
export function parseXvaChecksum(text: string): string | undefined {
  return parseChecksum(text)?.text
}

export const runXvaImport: XvaImporter = async (input, { signal, onProgress }) => {
  const t0 = performance.now()
  const remote = createRemote(input.remote.url, input.remote.options)
  await remote.open()
  try {
    const source = await remote.createReadStream(input.xvaPath, { signal })
    const gate = new ChecksumGate(input.checksum, input.xvaPath)
    const sentBytes = countSentBytes(gate, input.sizeBytes, onProgress)
    source.once('error', (e) => gate.destroy(e))
    source.pipe(gate)
    let gateError: Error | undefined
    gate.once('error', (e) => (gateError = e))
    try {
      await putXvaImport(input.descriptor, gate, input.sizeBytes, signal)
    } catch (error) {
      source.destroy()
      throw gateError ?? error
    }
    onProgress?.({ sentBytes: sentBytes(), totalBytes: input.sizeBytes })
    return { sentBytes: sentBytes(), durationMs: performance.now() - t0 }
  } finally {
    await remote.close()
  }
}

/**
 * Reads an XVA whole and compares its digest with its `.xva.checksum` (verify --full): the mismatch as a
 * sentence, or undefined when it matches or the file has no checksum (XO writes none on an encrypted
 * remote). Returns the bytes read too.
 */
export async function checkXvaChecksum(remote: Remote, path: string, signal?: AbortSignal): Promise<{ problem?: string; readBytes: number }> {
  let expected: string | undefined
  try {
    expected = parseXvaChecksum((await remote.readFile(`${path}.checksum`)).toString('utf8'))
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ENOENT') return { readBytes: 0 }
    throw error
  }
  const check = expected === undefined ? undefined : ChecksumCheck.of(expected)
  if (check === undefined) return { problem: `${path}.checksum is not a checksum in Xen Orchestra's format ($1$$<md5 hex>, $5$$<sha256 hex> or $6$$<sha512 hex>)`, readBytes: 0 }
  let readBytes = 0
  for await (const c of await remote.createReadStream(path, signal === undefined ? {} : { signal })) {
    check.update(c as Buffer)
    readBytes += (c as Buffer).length
  }
  const actual = check.actual()
  return actual === check.expected ? { readBytes } : { problem: `${check.algorithm.toUpperCase()} ${actual} differs from the checksum file's ${check.expected}: the XVA is corrupt`, readBytes }
}

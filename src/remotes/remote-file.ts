/**
 * Positioned reads of a remote file (`Remote.openFile`, the RemoteFile contract in remote-types.ts):
 * the default every transport gets (each read is a ranged read stream, copied into the caller's buffer:
 * NFS, SMB, S3, encrypted remotes), and the checked wrapper the Remote base class hands out (argument
 * checks, reads after close refused, errors mapped as the transport's other operations). The local
 * remote overrides the primitive with one FileHandle (local.ts).
 */
import type { Readable } from 'node:stream'
import { RemoteError } from '../common/errors.js'
import type { RemoteFile } from './remote-types.js'

type OpenRange = (start: number, end: number, signal: AbortSignal | undefined) => Promise<Readable>

/** The default RemoteFile: one ranged read stream per read (`openRange(start, endInclusive)`). */
export class StreamedRemoteFile implements RemoteFile {
  readonly #openRange: OpenRange
  constructor(
    readonly size: number,
    openRange: OpenRange,
  ) {
    this.#openRange = openRange
  }

  async read(buffer: Uint8Array, offset: number, length: number, position: number, signal?: AbortSignal): Promise<number> {
    const end = Math.min(position + length, this.size)
    if (end <= position) return 0
    const stream = await this.#openRange(position, end - 1, signal)
    let at = 0
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const n = Math.min(chunk.length, end - position - at)
      buffer.set(n === chunk.length ? chunk : chunk.subarray(0, n), offset + at)
      at += n
    }
    return at
  }

  async close(): Promise<void> {
    await Promise.resolve()
  }
}

function checkInteger(name: string, value: number, path: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RemoteError('EINVAL', `read of "${path}": ${name} must be a non-negative integer, got ${value}`)
}

/** What Remote.openFile returns: the transport's RemoteFile behind checks and error mapping. */
export class CheckedRemoteFile implements RemoteFile {
  #closed = false
  readonly #inner: RemoteFile
  readonly #path: string
  readonly #mapError: (error: unknown) => unknown

  constructor(inner: RemoteFile, path: string, mapError: (error: unknown) => unknown) {
    this.#inner = inner
    this.#path = path
    this.#mapError = mapError
  }

  get size(): number {
    return this.#inner.size
  }

  async read(buffer: Uint8Array, offset: number, length: number, position: number, signal?: AbortSignal): Promise<number> {
    checkInteger('offset', offset, this.#path)
    checkInteger('length', length, this.#path)
    checkInteger('position', position, this.#path)
    if (offset + length > buffer.length) throw new RemoteError('EINVAL', `read of "${this.#path}": ${length} bytes at offset ${offset} do not fit a ${buffer.length}-byte buffer`)
    if (this.#closed) throw new RemoteError('EINVAL', `read of "${this.#path}": the file was closed`)
    signal?.throwIfAborted()
    try {
      return await this.#inner.read(buffer, offset, length, position, signal)
    } catch (error) {
      throw this.#mapError(error)
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#inner.close()
  }
}

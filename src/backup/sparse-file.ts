/**
 * A local file written sparse, for raw disk images (`restore --to disk.raw`).
 *
 * A disk image is mostly unallocated blocks and zeros; writing them would make a 100 GiB disk with
 * 10 GiB of data take 100 GiB on the restore host. The writer looks at each chunk in units of
 * `holeUnitBytes` (64 KiB: a multiple of every file system's block size): a unit of zeros is not written
 * (the file offset moves on), consecutive units with data go out as one positional write, and the end
 * truncates the file to its full length, so zeros at the end are a hole too. The content read back is
 * byte for byte the stream's; only the allocated size differs.
 */
import { open, type FileHandle } from 'node:fs/promises'
import { Writable } from 'node:stream'

export const HOLE_UNIT_BYTES = 64 * 1024

const ZEROS = Buffer.alloc(HOLE_UNIT_BYTES)

function isZero(chunk: Buffer, start: number, end: number): boolean {
  return chunk.subarray(start, end).equals(ZEROS.subarray(0, end - start))
}

async function writeAt(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  for (let done = 0; done < data.length; ) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done)
    done += bytesWritten
  }
}

/** A Writable over a new (or truncated) file that leaves holes where the data is zeros. */
export class SparseFileWriter extends Writable {
  #fh: FileHandle | undefined
  #position = 0
  /** bytes actually written (data units), as opposed to the file's length */
  dataBytes = 0

  constructor(readonly path: string) {
    super()
  }

  override _construct(callback: (error?: Error | null) => void): void {
    open(this.path, 'w').then((fh) => {
      this.#fh = fh
      callback()
    }, callback)
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#writeChunk(chunk).then(() => callback(), callback)
  }

  async #writeChunk(chunk: Buffer): Promise<void> {
    const fh = this.#fh!
    let run = -1 // start of the current run of units with data
    for (let at = 0; at < chunk.length; at += HOLE_UNIT_BYTES) {
      const zero = isZero(chunk, at, Math.min(at + HOLE_UNIT_BYTES, chunk.length))
      if (!zero && run < 0) run = at
      if (zero && run >= 0) {
        await writeAt(fh, chunk.subarray(run, at), this.#position + run)
        this.dataBytes += at - run
        run = -1
      }
    }
    if (run >= 0) {
      await writeAt(fh, chunk.subarray(run), this.#position + run)
      this.dataBytes += chunk.length - run
    }
    this.#position += chunk.length
  }

  override _final(callback: (error?: Error | null) => void): void {
    const fh = this.#fh!
    this.#fh = undefined
    fh.truncate(this.#position)
      .then(() => fh.close())
      .then(() => callback(), (error: Error) => fh.close().then(() => callback(error), () => callback(error)))
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const fh = this.#fh
    this.#fh = undefined
    if (fh === undefined) return callback(error)
    fh.close().then(() => callback(error), () => callback(error))
  }
}

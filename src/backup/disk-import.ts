/**
 * One disk of a restore, as run inside a pool thread (`backup.restoreDisk`, restore-disk.thread.ts) or
 * inline: the disk's chain is opened on the remote (VhdFile or VhdDirectory, compressed or encrypted, any
 * length) and streamed as one flattened dynamic VHD (`VhdChain.vhdStream`) into the VDI of an import
 * descriptor (`PUT /import_raw_vdi/?format=vhd`, xapi/restore-import.ts). The main thread created the VDI and
 * the XAPI task of the descriptor and waits for that task: this side only moves the bytes.
 *
 * Input and output are plain data (structured clone); the remote URL holds credentials and is never
 * logged. Cancel (the signal) ends the upload; the caller cancels the XAPI task and removes the VDI.
 */
import type { Readable } from 'node:stream'
import { BackupProxyError } from '../common/errors.js'
import { createRemote } from '../remotes/index.js'
import type { RemoteOptions } from '../remotes/url-types.js'
import { VhdBlockPool } from '../vhd/block-pool.js'
import { openChain } from '../vhd/chain.js'
import { STORED_FRAME_MARGIN } from '../vhd/compression.js'
import type { VdiImportDescriptor } from '../xapi/descriptors.js'
import { putVdiImport } from '../xapi/restore-import.js'

export interface DiskImportInput {
  remote: { url: string; options: RemoteOptions }
  /** remote-root path of the disk's VHD in the backup (child of its chain) */
  vhdPath: string
  descriptor: VdiImportDescriptor
  /** exact bytes of the flattened VHD (Content-Length) */
  sizeBytes: number
}

export interface DiskImportResult {
  sentBytes: number
  chainLength: number
  durationMs: number
}

export interface DiskImportProgress {
  sentBytes: number
  totalBytes: number
}

export type DiskImporter = (input: DiskImportInput, options: { signal: AbortSignal; onProgress?: (p: DiskImportProgress) => void }) => Promise<DiskImportResult>

const PROGRESS_EVERY_BYTES = 16 * 1024 * 1024

/**
 * Counts the bytes `stream` emits on its way to XAPI and reports them every 16 MiB (a disk or XVA
 * upload); the returned function reads the count.
 */
export function countSentBytes(stream: Readable, totalBytes: number, onProgress: ((p: DiskImportProgress) => void) | undefined): () => number {
  let sent = 0
  let reported = 0
  stream.on('data', (c: Buffer) => {
    sent += c.length
    if (sent - reported >= PROGRESS_EVERY_BYTES) {
      reported = sent
      onProgress?.({ sentBytes: sent, totalBytes })
    }
  })
  return () => sent
}

export async function runDiskImport(input: DiskImportInput, options: { signal: AbortSignal; onProgress?: (p: DiskImportProgress) => void }): Promise<DiskImportResult> {
  const t0 = performance.now()
  const { signal, onProgress } = options
  const remote = createRemote(input.remote.url, input.remote.options)
  await remote.open()
  try {
    const chain = await openChain(remote, input.vhdPath, { signal })
    // block buffers reused once the socket has sent them (read-ahead + a few being written); the margins
    // let a VhdDirectory's stored brotli block file be read with its block in place
    const pool = new VhdBlockPool({ maxFree: 8, margin: STORED_FRAME_MARGIN })
    const stream = chain.vhdStream({ signal, pool })
    const sentBytes = countSentBytes(stream, input.sizeBytes, onProgress)
    await putVdiImport(input.descriptor, stream, { signal, sizeBytes: input.sizeBytes, onWritten: (chunk) => pool.done(chunk) })
    const sent = sentBytes()
    if (sent !== input.sizeBytes) throw new BackupProxyError('E_BACKUP', `restore of ${input.vhdPath}: sent ${sent} bytes, expected ${input.sizeBytes}`)
    onProgress?.({ sentBytes: sent, totalBytes: input.sizeBytes })
    return { sentBytes: sent, chainLength: chain.vhds.length, durationMs: performance.now() - t0 }
  } finally {
    await remote.close()
  }
}

/** Runs on the calling thread (the CLI, tools). */
export const inlineImporter: DiskImporter = runDiskImport


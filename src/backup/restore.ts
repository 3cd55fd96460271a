/**
 * Restore of one disk at a point in time: find the backup (a timestamp, or the newest), the disk's VHD
 * in it, open its chain (child → parents) and stream the disk either as raw bytes (absent blocks are
 * zeros) or as one flattened dynamic VHD. Written to a local file atomically (temporary name, renamed
 * when complete), so a failed or cancelled restore never leaves a partial image under the asked name;
 * a raw image is written sparse (unallocated and all-zero blocks are holes: sparse-file.ts).
 * `findVmBackup` picks the backup of a VM at a timestamp (or the newest) for a whole-VM restore.
 */
import { createWriteStream } from 'node:fs'
import { rename, rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { randomBytes } from 'node:crypto'
import { BackupProxyError } from '../common/errors.js'
import type { Remote } from '../remotes/remote.js'
import { openChain } from '../vhd/chain.js'
import { listBackups, type CatalogEntry } from './catalog.js'
import { resolveVhdPath, sourceVdiUuid } from './layout.js'
import { SparseFileWriter } from './sparse-file.js'

interface RestoreSelection {
  vmUuid: string
  /** source VDI uuid (the disk's chain), or the snapshot VDI uuid of one backup */
  vdiUuid: string
  /** `YYYYMMDDTHHmmssZ`; default the newest backup holding that disk */
  at?: string
}

interface RestoreSource {
  backup: CatalogEntry
  /** remote path of the disk's VHD in that backup */
  vhdPath: string
  /** chain paths, child first */
  chain: string[]
  virtualSizeBytes: number
  stream: Readable
}

/** Finds the backup and disk of a selection; the error lists what exists when nothing matches. */
export async function findDiskBackup(remote: Remote, sel: RestoreSelection): Promise<{ backup: CatalogEntry; vhdPath: string }> {
  const backups = await listBackups(remote, sel.vmUuid)
  if (backups.length === 0) throw new BackupProxyError('E_BACKUP', `no backup of VM ${sel.vmUuid} on ${remote.displayUrl}`)
  const withDisk = backups
    .map((b) => {
      const ref = Object.keys(b.metadata.vhds).find((r) => sourceVdiUuid(b.metadata, r) === sel.vdiUuid || b.metadata.vdis[r]?.uuid === sel.vdiUuid)
      return ref === undefined ? undefined : { backup: b, vhdPath: resolveVhdPath(sel.vmUuid, b.metadata.vhds[ref]!) }
    })
    .filter((x): x is { backup: CatalogEntry; vhdPath: string } => x !== undefined)
  if (withDisk.length === 0) {
    const disks = [...new Set(backups.flatMap((b) => Object.keys(b.metadata.vhds).map((r) => sourceVdiUuid(b.metadata, r) ?? r)))]
    throw new BackupProxyError('E_BACKUP', `no backup of VM ${sel.vmUuid} holds disk ${sel.vdiUuid}; its disks are: ${disks.join(', ')}`)
  }
  if (sel.at === undefined) return withDisk[withDisk.length - 1]!
  const found = withDisk.find((x) => x.backup.timestamp === sel.at)
  if (found === undefined) {
    throw new BackupProxyError('E_BACKUP', `no backup of disk ${sel.vdiUuid} at ${sel.at}; available: ${withDisk.map((x) => x.backup.timestamp).join(', ')}`)
  }
  return found
}

async function openRestore(remote: Remote, sel: RestoreSelection, format: 'raw' | 'vhd', signal?: AbortSignal): Promise<RestoreSource> {
  const { backup, vhdPath } = await findDiskBackup(remote, sel)
  const chain = await openChain(remote, vhdPath, signal === undefined ? {} : { signal })
  const opts = signal === undefined ? {} : { signal }
  return {
    backup,
    vhdPath,
    chain: chain.vhds.map((v) => v.path),
    virtualSizeBytes: chain.virtualSizeBytes,
    stream: format === 'raw' ? chain.rawStream(opts) : chain.vhdStream(opts),
  }
}

export function formatOfPath(path: string): 'raw' | 'vhd' {
  if (path.endsWith('.vhd')) return 'vhd'
  if (path.endsWith('.raw') || path.endsWith('.img')) return 'raw'
  throw new BackupProxyError('E_USAGE', `--to ${path}: the output must end with .raw (or .img) for a raw image, or .vhd for a VHD`)
}

interface RestoreResult {
  timestamp: string
  vhdPath: string
  chain: string[]
  virtualSizeBytes: number
  /** bytes of the image (the disk's size for raw) */
  writtenBytes: number
  /** bytes of data written to the file: a raw image leaves zeros as holes */
  dataBytes: number
  durationMs: number
}

/** Restores to a local file, atomically; a raw image sparse. */
export async function restoreDiskToFile(remote: Remote, sel: RestoreSelection, toPath: string, options: { signal?: AbortSignal; onProgress?: (bytes: number) => void } = {}): Promise<RestoreResult> {
  const t0 = performance.now()
  const format = formatOfPath(toPath)
  const src = await openRestore(remote, sel, format, options.signal)
  const tmp = join(dirname(toPath), `.${basename(toPath)}.${randomBytes(4).toString('hex')}.tmp`)
  let written = 0
  src.stream.on('data', (c: Buffer) => {
    written += c.length
    options.onProgress?.(written)
  })
  const out = format === 'raw' ? new SparseFileWriter(tmp) : createWriteStream(tmp)
  try {
    await pipeline(src.stream, out, options.signal === undefined ? {} : { signal: options.signal })
    await rename(tmp, toPath)
  } catch (error) {
    await rm(tmp, { force: true })
    throw error
  }
  return { timestamp: src.backup.timestamp, vhdPath: src.vhdPath, chain: src.chain, virtualSizeBytes: src.virtualSizeBytes, writtenBytes: written, dataBytes: out instanceof SparseFileWriter ? out.dataBytes : written, durationMs: performance.now() - t0 }
}

/** The backup of a VM at `at` (`YYYYMMDDTHHmmssZ`), or its newest; the error lists what exists. */
export async function findVmBackup(remote: Remote, vmUuid: string, at?: string): Promise<CatalogEntry> {
  const backups = await listBackups(remote, vmUuid)
  if (backups.length === 0) throw new BackupProxyError('E_BACKUP', `no backup of VM ${vmUuid} on ${remote.displayUrl}`)
  if (at === undefined) return backups[backups.length - 1]!
  const found = backups.find((b) => b.timestamp === at)
  if (found === undefined) throw new BackupProxyError('E_BACKUP', `no backup of VM ${vmUuid} at ${at}; available: ${backups.map((b) => b.timestamp).join(', ')}`)
  return found
}

/**
 * One backup of a VM mirrored from the source remote to some targets, in Xen Orchestra's layout as its
 * mirror writers write it (IncrementalRemoteWriter / FullRemoteWriter):
 *
 *   delta  each disk's VHD at `vdis/<mirror job id>/<vdi uuid>/<ts>.vhd` (or `.alias.vhd` on a
 *          VhdDirectory target), a delta chained onto the newest VHD of that directory whose uuid is the
 *          source delta's parent uuid (none → the backup fails on that target: XO's "Missing vdi ... which
 *          is a base for a delta");
 *   full   `<ts>.xva` and, when the source has one, `<ts>.xva.checksum` (the copy is checked against it);
 *
 * then the metadata `<ts>.json`, LAST (its presence is what makes the backup exist), with the mirror's
 * jobId and scheduleId, the source's timestamp, records and size, and XO's cache.json.gz rebuilt. Every
 * file goes through a temporary name and is validated before it is published, so a crash leaves either
 * nothing or files without metadata: a VHD or XVA published by a killed run, not referenced by any
 * metadata, is removed before it is written again.
 */
import { posix } from 'node:path'
import { BackupProxyError, errorCode, serializeError, type SerializedError } from '../common/errors.js'
import type { Remote } from '../remotes/remote.js'
import { useVhdDirectory } from '../remotes/remote.js'
import type { RemoteOptions } from '../remotes/url-types.js'
import { DISK_TYPES } from '../vhd/constants.js'
import { defaultDataPath } from '../vhd/directory-sink.js'
import { isAlias, openVhd } from '../vhd/open.js'
import { updateCache, type CatalogEntry } from './catalog.js'
import { metadataPath, resolveVhdPath, sourceVdiUuid, timestampOfName, vdiDir, vhdRelativePath, vmDir } from './layout.js'
import type { CopyResult } from './mirror-copy.js'
import type { MirrorCopyInput } from './mirror.thread.js'
import type { DiskTarget } from './ports.js'
import { removeVhd } from './vhd-ops.js'

/** Runs one copy (the `mirror.copy` pool task in a proxy, inline in tools and tests). */
export type MirrorCopier = (input: MirrorCopyInput, options: { signal: AbortSignal; onProgress?: (p: { readBytes: number }) => void }) => Promise<CopyResult>

export interface MirrorTarget {
  id: string
  url: string
  options: RemoteOptions
  remote: Remote
  /** VhdDirectory compression of this target */
  compression: 'none' | 'brotli'
}

interface MirrorBackupContext {
  vmUuid: string
  jobId: string
  scheduleId: string
  source: { url: string; options: RemoteOptions; remote: Remote }
  copier: MirrorCopier
  signal: AbortSignal
  onProgress?: (readBytes: number) => void
  /** test hook: after each file copied (VHD or XVA), before the metadata */
  onFileCopied?: (path: string) => Promise<void> | void
}

interface MirrorBackupResult {
  succeeded: string[]
  failed: { id: string; error: SerializedError }[]
  sizeBytes: number
  readBytes: number
}

/** Finds, in a target's chain directory, the VHD (newest first) whose footer uuid is `uuid`. */
async function findParent(remote: Remote, dir: string, uuid: string, before: string): Promise<string | undefined> {
  let names: string[]
  try {
    names = (await remote.list(dir)).filter((e) => !e.isDirectory && timestampOfName(e.path) !== undefined && e.path.endsWith('.vhd')).map((e) => e.path)
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined
    throw error
  }
  for (const name of names.filter((n) => timestampOfName(n)! < before).sort().reverse()) {
    const path = `${dir}/${name}`
    if ((await openVhd(remote, path)).footer.uuid === uuid) return path
  }
  return undefined
}

/**
 * Removes what a killed run left at `path` without metadata (no error when absent): the file, or for a
 * VhdDirectory its alias and its data directory (which a killed writer leaves half written, alias-less).
 */
async function removeOrphan(remote: Remote, path: string, vhd: boolean): Promise<void> {
  if (vhd && isAlias(path)) await remote.rmtree(defaultDataPath(path))
  if (!(await remote.exists(path))) return
  if (vhd) await removeVhd(remote, path)
  else await remote.unlink(path)
}

interface DiskPlan {
  ref: string
  sourcePath: string
  differencing: boolean
  /** target id → its VHD path relative to the VM dir */
  relative: Map<string, string>
}

async function copyDeltaDisks(backup: CatalogEntry, targets: MirrorTarget[], ctx: MirrorBackupContext, failed: Map<string, Error>): Promise<{ disks: DiskPlan[]; sizeBytes: number; readBytes: number }> {
  const m = backup.metadata
  const disks: DiskPlan[] = []
  let sizeBytes = 0
  let readBytes = 0
  for (const [ref, rel] of Object.entries(m.vhds)) {
    const vdiUuid = sourceVdiUuid(m, ref)
    if (vdiUuid === undefined) throw new BackupProxyError('E_BACKUP', `${backup.metadataPath}: cannot tell which disk ${ref} is`)
    const sourcePath = resolveVhdPath(ctx.vmUuid, rel)
    const head = await openVhd(ctx.source.remote, sourcePath, { signal: ctx.signal })
    const differencing = head.footer.diskType === DISK_TYPES.DIFFERENCING
    const plan: DiskPlan = { ref, sourcePath, differencing, relative: new Map() }
    const inputs: DiskTarget[] = []
    for (const t of targets.filter((x) => !failed.has(x.id))) {
      const directory = useVhdDirectory(t.remote, t.options)
      const relative = vhdRelativePath(ctx.jobId, vdiUuid, backup.timestamp, directory)
      const path = resolveVhdPath(ctx.vmUuid, relative)
      let parent: { path: string; uuid: string } | undefined
      if (differencing) {
        const found = await findParent(t.remote, vdiDir(ctx.vmUuid, ctx.jobId, vdiUuid), head.header.parentUuid, backup.timestamp)
        if (found === undefined) {
          failed.set(t.id, new BackupProxyError('E_BACKUP', `missing VDI ${head.header.parentUuid} on ${t.id}, the base of the delta ${sourcePath}: mirror its chain from the start (a new chain starts at the source's next full)`))
          continue
        }
        parent = { path: found, uuid: head.header.parentUuid }
      }
      await removeOrphan(t.remote, path, true)
      plan.relative.set(t.id, relative)
      inputs.push({ id: t.id, url: t.url, options: t.options, path, directory, compression: t.compression, ...(parent === undefined ? {} : { parent }) })
    }
    if (inputs.length === 0) break
    const result = await ctx.copier({ op: 'vhd', source: { url: ctx.source.url, options: ctx.source.options }, sourcePath, targets: inputs }, { signal: ctx.signal, onProgress: (p) => ctx.onProgress?.(readBytes + p.readBytes) })
    for (const f of result.failed) failed.set(f.id, new BackupProxyError('E_BACKUP', f.error.message))
    sizeBytes += result.sizeBytes
    readBytes += result.readBytes
    await ctx.onFileCopied?.(sourcePath)
    disks.push(plan)
  }
  return { disks, sizeBytes, readBytes }
}

async function copyXva(backup: CatalogEntry, targets: MirrorTarget[], ctx: MirrorBackupContext, failed: Map<string, Error>): Promise<{ checksum?: string; sizeBytes: number }> {
  const xva = backup.metadata.xva
  if (xva === undefined) throw new BackupProxyError('E_BACKUP', `${backup.metadataPath}: a full backup without its "xva" file`)
  const sourcePath = posix.normalize(`${vmDir(ctx.vmUuid)}/${xva}`)
  if (!sourcePath.startsWith(`${vmDir(ctx.vmUuid)}/`)) throw new BackupProxyError('E_BACKUP', `${backup.metadataPath} points outside its directory: ${xva}`)
  let checksum: string | undefined
  try {
    checksum = (await ctx.source.remote.readFile(`${sourcePath}.checksum`)).toString('utf8').trim()
  } catch (error) {
    if (errorCode(error) !== 'ENOENT') throw error
  }
  const path = `${vmDir(ctx.vmUuid)}/${backup.timestamp}.xva`
  const live = targets.filter((t) => !failed.has(t.id))
  for (const t of live) await removeOrphan(t.remote, path, false)
  const result = await ctx.copier(
    { op: 'file', source: { url: ctx.source.url, options: ctx.source.options }, sourcePath, ...(checksum === undefined ? {} : { checksum }), targets: live.map((t) => ({ id: t.id, url: t.url, options: t.options, path })) },
    { signal: ctx.signal, onProgress: (p) => ctx.onProgress?.(p.readBytes) },
  )
  for (const f of result.failed) failed.set(f.id, new BackupProxyError('E_BACKUP', f.error.message))
  if (checksum !== undefined) {
    for (const t of live.filter((x) => !failed.has(x.id))) await t.remote.writeFile(`${path}.checksum`, checksum, { signal: ctx.signal })
  }
  await ctx.onFileCopied?.(path)
  return { ...(checksum === undefined ? {} : { checksum }), sizeBytes: result.sizeBytes }
}

/** The metadata the mirror writes on a target: the source's, re-owned by the mirror job, in XO's field order. */
function mirroredMetadata(backup: CatalogEntry, ctx: MirrorBackupContext, size: number, vhds: Record<string, string> | undefined, isVhdDifferencing: Record<string, boolean> | undefined): Record<string, unknown> {
  const raw = backup.raw
  if (vhds === undefined) {
    return { ...raw, jobId: ctx.jobId, mode: 'full', scheduleId: ctx.scheduleId, xva: `./${backup.timestamp}.xva`, size, tags: [] }
  }
  const { includeNonNbdQcow2Fix, vbds, vdis, version, vifs, vm, vmSnapshot, vtpms } = raw
  return {
    ...(includeNonNbdQcow2Fix === undefined ? {} : { includeNonNbdQcow2Fix }),
    isVhdDifferencing,
    jobId: ctx.jobId,
    mode: 'delta',
    scheduleId: ctx.scheduleId,
    timestamp: backup.metadata.timestamp,
    vbds,
    vdis,
    version,
    vifs,
    vhds,
    vm,
    vmSnapshot,
    vtpms: vtpms ?? [],
    tags: [],
    size,
  }
}

/** Mirrors `backup` to `targets` (those already holding it are the caller's to leave out). */
export async function mirrorBackup(backup: CatalogEntry, targets: MirrorTarget[], ctx: MirrorBackupContext): Promise<MirrorBackupResult> {
  const failed = new Map<string, Error>()
  let sizeBytes: number
  let readBytes: number
  const perTarget = new Map<string, Record<string, unknown>>()
  if (backup.metadata.mode === 'delta') {
    const copied = await copyDeltaDisks(backup, targets, ctx, failed)
    sizeBytes = copied.sizeBytes
    readBytes = copied.readBytes
    for (const t of targets.filter((x) => !failed.has(x.id))) {
      const vhds = Object.fromEntries(copied.disks.map((d) => [d.ref, d.relative.get(t.id)!]))
      const diff = Object.fromEntries(copied.disks.map((d) => [d.ref, d.differencing]))
      perTarget.set(t.id, mirroredMetadata(backup, ctx, sizeBytes, vhds, diff))
    }
  } else {
    const copied = await copyXva(backup, targets, ctx, failed)
    sizeBytes = copied.sizeBytes
    readBytes = copied.sizeBytes
    for (const t of targets.filter((x) => !failed.has(x.id))) perTarget.set(t.id, mirroredMetadata(backup, ctx, sizeBytes, undefined, undefined))
  }
  for (const t of targets.filter((x) => perTarget.has(x.id))) {
    try {
      await t.remote.writeFile(metadataPath(ctx.vmUuid, backup.timestamp), JSON.stringify(perTarget.get(t.id)), { exclusive: true, signal: ctx.signal })
      await updateCache(t.remote, ctx.vmUuid)
    } catch (error) {
      failed.set(t.id, error as Error)
    }
  }
  return {
    succeeded: targets.filter((t) => !failed.has(t.id)).map((t) => t.id),
    failed: [...failed].map(([id, error]) => ({ id, error: serializeError(error) })),
    sizeBytes,
    readBytes,
  }
}

/**
 * Verify of the backups on a remote (one VM, or all), without trusting any index:
 *  - every metadata file parses (version 2.0.0, required fields) and every VHD it names exists;
 *  - every such VHD's chain opens and checks (structures, checksums, parent UUIDs, no missing parent:
 *    src/vhd checkChain); with `full`, every block of the chain is read back (raw stream);
 *  - a full backup's XVA exists; with `full`, it is read whole against its `.xva.checksum` (MD5);
 *  - no orphan: a VHD (or VhdDirectory data) under `vdis/` that no backup references, directly or as
 *    an ancestor of a referenced one;
 *  - leftovers: temporaries and unfinished merge states (reported, they are cleaned by the next run);
 *  - the VM's cache.json.gz: present but not what Xen Orchestra's listing needs (our old format without
 *    `_filename`/`id`, unreadable, or listing other backups than the metadata files; see catalog.ts).
 * Problems carry the path and a message; nothing is modified, except with `repair`: then a bad cache
 * is rewritten from the metadata files (the problem is still reported, with `repaired: true`).
 */
import { checkXvaChecksum } from './xva-import.js'
import { posix } from 'node:path'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { errorCode, toError } from '../common/errors.js'
import { isTemporaryName, type Remote } from '../remotes/remote.js'
import { checkChain, openChain } from '../vhd/chain.js'
import { checkCache, listBackedUpVms, listBackups, updateCache, type CatalogEntry } from './catalog.js'
import { cachePath, resolveVhdPath, timestampOfName, vmDir } from './layout.js'

type ProblemKind = 'metadata' | 'missing' | 'chain' | 'data' | 'orphan' | 'leftover' | 'cache'

interface VerifyProblem {
  kind: ProblemKind
  path: string
  message: string
  /** set when `repair` fixed it */
  repaired?: boolean
}

interface VerifyReport {
  vms: number
  backups: number
  vhds: number
  /** bytes read back with `full` */
  readBytes: number
  problems: VerifyProblem[]
  warnings: string[]
}

interface VerifyOptions {
  vmUuid?: string
  /** only the backup of this metadata file */
  metadataPath?: string
  /** read every block of every chain */
  full?: boolean
  /** rewrite a bad cache.json.gz (the only thing verify repairs) */
  repair?: boolean
  signal?: AbortSignal
  onProgress?: (done: number, total: number) => void
}

/** A sink that counts and drops bytes (reading back is the check). */
function counter(onBytes: (n: number) => void): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      onBytes(chunk.length)
      cb()
    },
  })
}

/** One verify's state: the report being filled, and the options. */
interface Verify {
  remote: Remote
  options: VerifyOptions
  report: VerifyReport
  problem: (kind: ProblemKind, path: string, message: string) => void
}

export async function verifyRemote(remote: Remote, options: VerifyOptions = {}): Promise<VerifyReport> {
  const report: VerifyReport = { vms: 0, backups: 0, vhds: 0, readBytes: 0, problems: [], warnings: [] }
  const v: Verify = { remote, options, report, problem: (kind, path, message) => report.problems.push({ kind, path, message }) }
  const onlyVm = options.vmUuid ?? (options.metadataPath === undefined ? undefined : options.metadataPath.split('/')[1])
  const vms = onlyVm === undefined ? await listBackedUpVms(remote) : [onlyVm]
  for (const vmUuid of vms) {
    options.signal?.throwIfAborted()
    report.vms++
    await verifyVm(v, vmUuid)
  }
  return report
}

/** One VM: its backups (or the one asked for), then, for a whole VM, its cache and what lies under vdis/. */
async function verifyVm(v: Verify, vmUuid: string): Promise<void> {
  const { remote, options } = v
  let backups = await listBackups(remote, vmUuid, (path, error) => v.problem('metadata', path, error.message))
  if (options.metadataPath !== undefined) {
    backups = backups.filter((b) => b.metadataPath === options.metadataPath)
    if (backups.length === 0 && !v.report.problems.some((p) => p.path === options.metadataPath)) v.problem('missing', options.metadataPath, 'no such backup metadata')
  }
  // every referenced VHD and its chain
  const inChains = new Set<string>()
  let done = 0
  for (const b of backups) {
    v.report.backups++
    await verifyBackup(v, vmUuid, b, inChains)
    options.onProgress?.(++done, backups.length)
  }
  if (options.metadataPath !== undefined) return
  await verifyCache(v, vmUuid, backups)
  await verifyVdisDir(v, vmUuid, inChains)
}

/** One backup: its XVA (a full backup) and each of its VHDs with its chain, whose paths go to `inChains`. */
async function verifyBackup(v: Verify, vmUuid: string, b: CatalogEntry, inChains: Set<string>): Promise<void> {
  const { remote, options, report } = v
  const signalOption = options.signal === undefined ? {} : { signal: options.signal }
  if (b.metadata.xva !== undefined) {
    // a full (XVA) backup: its file must be there
    const xva = resolveVhdPath(vmUuid, b.metadata.xva)
    if (!(await remote.exists(xva))) v.problem('missing', xva, `named by ${b.metadataPath} (xva) but absent`)
    else if (options.full === true) {
      // with --full, the XVA is read whole against XO's .xva.checksum
      const r = await checkXvaChecksum(remote, xva, options.signal)
      report.readBytes += r.readBytes
      if (r.problem !== undefined) v.problem('data', xva, r.problem)
    }
  }
  for (const [ref, rel] of Object.entries(b.metadata.vhds)) {
    options.signal?.throwIfAborted()
    const path = resolveVhdPath(vmUuid, rel)
    report.vhds++
    if (!(await remote.exists(path))) {
      v.problem('missing', path, `named by ${b.metadataPath} (disk ${ref}) but absent`)
      continue
    }
    try {
      const r = await checkChain(remote, path, signalOption)
      for (const p of r.paths) inChains.add(p)
      report.warnings.push(...r.warnings)
      if (options.full === true) {
        const chain = await openChain(remote, path)
        await pipeline(chain.rawStream(signalOption), counter((n) => (report.readBytes += n)))
      }
    } catch (error) {
      if (errorCode(error) === 'E_CANCELLED') throw error
      v.problem(options.full === true ? 'data' : 'chain', path, toError(error).message)
    }
  }
}

/** The VM's cache.json.gz against its backups; rewritten with `repair`. */
async function verifyCache(v: Verify, vmUuid: string, backups: readonly CatalogEntry[]): Promise<void> {
  const cacheProblem = await checkCache(v.remote, vmUuid, backups)
  if (cacheProblem === undefined) return
  const p: VerifyProblem = { kind: 'cache', path: cachePath(vmUuid), message: `${cacheProblem}: run verify --repair (or the next backup of this VM) to rewrite it` }
  if (v.options.repair === true) {
    await updateCache(v.remote, vmUuid)
    p.repaired = true
  }
  v.report.problems.push(p)
}

/** Orphans and leftovers below the VM's vdis/. */
async function verifyVdisDir(v: Verify, vmUuid: string, inChains: ReadonlySet<string>): Promise<void> {
  let entries: { path: string; isDirectory: boolean }[] = []
  try {
    entries = await v.remote.list(`${vmDir(vmUuid)}/vdis`, { recursive: true, includeHidden: true })
  } catch (error) {
    if (errorCode(error) !== 'ENOENT') throw error
  }
  const referencedData = new Set([...inChains].map((p) => (p.endsWith('.alias.vhd') ? posix.join(posix.dirname(p), 'data', `${posix.basename(p, '.alias.vhd')}.vhd`) : p)))
  for (const e of entries) {
    const full = `${vmDir(vmUuid)}/vdis/${e.path}`
    const name = posix.basename(e.path)
    if (isTemporaryName(name) || name.endsWith('.merge.json')) {
      v.problem('leftover', full, name.endsWith('.merge.json') ? 'an unfinished merge: the next backup run of this job resumes it' : 'a temporary of an interrupted write: the next backup run removes it')
      continue
    }
    if (e.isDirectory) {
      // a VhdDirectory data dir: data/<ts>.vhd
      if (posix.basename(posix.dirname(full)) === 'data' && name.endsWith('.vhd') && !referencedData.has(full)) v.problem('orphan', full, 'VhdDirectory data that no backup references')
      continue
    }
    if (full.includes('/data/')) continue
    if (timestampOfName(name) !== undefined && name.endsWith('.vhd') && !inChains.has(full)) v.problem('orphan', full, 'a VHD that no backup references (directly or as a parent)')
  }
}

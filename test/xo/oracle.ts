/**
 * Xen Orchestra's own backup library as a test oracle: @xen-orchestra/fs (getHandler), the
 * RemoteAdapter of @xen-orchestra/backups (listing, cache, retention, cleanVm with merge, restore
 * reader) and formatVmBackups (what XO's UI shows). The packages are devDependencies; the @vates
 * packages the registry lacks are test-only stand-ins in test/shims (see docs/xo-compatibility.md).
 * These are minimal shapes of the untyped JavaScript API the tests call.
 */
import { createRequire } from 'node:module'

export interface XoHandler {
  sync(): Promise<void>
  forget(): Promise<void>
  useVhdDirectory(): boolean
  list(dir: string, opts?: Record<string, unknown>): Promise<string[]>
  readFile(path: string): Promise<Buffer>
}

/** One backup as RemoteAdapter#listVmBackups returns it (the cache entry). */
export interface XoBackup extends Record<string, unknown> {
  _filename: string
  id: string
  mode: 'delta' | 'full'
  timestamp: number
  jobId: string
  scheduleId: string
  vhds?: Record<string, string>
  vdis?: Record<string, Record<string, unknown>>
  vm: Record<string, unknown>
  vmSnapshot: Record<string, unknown>
}

/** What formatVmBackups makes of a backup (XO's UI / API object). */
export interface XoFormattedBackup {
  type: string
  id: string
  mode: string
  size: number
  timestamp: number
  jobId: string
  scheduleId: string
  disks: { id: string; name: string; uuid: string }[]
  vm: { uuid: string; name_label: string; name_description: string; tags: unknown }
  tags: unknown[]
  differencingVhds: number | undefined
  dynamicVhds: number | undefined
  withMemory: boolean
  isImmutable: boolean | undefined
}

export interface XoDisk {
  getVirtualSize(): number
  getBlockSize(): number
  close(): Promise<void>
}

export interface XoIncrementalBackup {
  disks: Record<string, XoDisk>
  vdis: Record<string, Record<string, unknown>>
  vm: Record<string, unknown>
}

export interface XoRemoteAdapter {
  handler: XoHandler
  useVhdDirectory(): boolean
  listAllVmBackups(): Promise<Record<string, XoBackup[]>>
  listVmBackups(vmUuid: string, predicate?: (b: XoBackup) => boolean): Promise<XoBackup[]>
  deleteDeltaVmBackups(backups: XoBackup[]): Promise<void>
  cleanVm(dir: string, opts: Record<string, unknown>): Promise<{ merge: boolean; size: number }>
  readIncrementalVmBackup(metadata: XoBackup, ignored: undefined, opts?: { useChain?: boolean }): Promise<XoIncrementalBackup>
  isMergeableParent(packedParentUid: Buffer, path: string): Promise<boolean>
  writeVmBackupMetadata(vmUuid: string, metadata: Record<string, unknown>): Promise<string>
  writeVhd(path: string, disk: unknown, opts: Record<string, unknown>): Promise<number>
  getVhdFileName(base: string): string
}

const require = createRequire(import.meta.url)
const xoFs = require('@xen-orchestra/fs') as { getHandler(remote: Record<string, unknown>): XoHandler }

export interface XoLib {
  RemoteAdapter: new (handler: XoHandler, opts?: { vhdDirectoryCompression?: string; dirMode?: number }) => XoRemoteAdapter
  formatVmBackups(byVm: Record<string, XoBackup[]>, repositoryId: string): Record<string, XoFormattedBackup[]>
}

export async function loadXo(): Promise<XoLib> {
  const ra = (await import('@xen-orchestra/backups/RemoteAdapter.mjs')) as { RemoteAdapter: XoLib['RemoteAdapter'] }
  const fmt = (await import('@xen-orchestra/backups/formatVmBackups.mjs')) as { formatVmBackups: XoLib['formatVmBackups'] }
  return { RemoteAdapter: ra.RemoteAdapter, formatVmBackups: fmt.formatVmBackups }
}

/**
 * XO's handler of a remote. `remote` is what XO's current xo-remote-parser makes of the URL (the
 * registry's old parser cannot parse S3 URLs: the tests build that object themselves).
 */
export async function xoHandler(remote: Record<string, unknown>): Promise<XoHandler> {
  const h = xoFs.getHandler(remote)
  await h.sync()
  return h
}

/** XO's adapter over a handler, with XO proxies' default VhdDirectory compression (brotli). */
export async function xoAdapter(remote: Record<string, unknown>): Promise<{ adapter: XoRemoteAdapter; xo: XoLib; close: () => Promise<void> }> {
  const xo = await loadXo()
  const handler = await xoHandler(remote)
  return { adapter: new xo.RemoteAdapter(handler, { vhdDirectoryCompression: 'brotli' }), xo, close: () => handler.forget() }
}

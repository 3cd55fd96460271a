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
  /** `checksum: true` verifies the file against `<path>.checksum`: the stream errors and its `checksumVerified` rejects on a mismatch */
  createReadStream(path: string, opts?: { checksum?: boolean }): Promise<AsyncIterable<Buffer> & { checksumVerified?: Promise<unknown> }>
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
interface XoFormattedBackup {
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

interface XoDisk {
  getVirtualSize(): number
  getBlockSize(): number
  close(): Promise<void>
}

interface XoIncrementalBackup {
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

interface XoLib {
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

/** An object of XO's XAPI client (a XAPI record plus `$` accessors of linked objects). */
export type XoXapiObject = Record<string, unknown> & { $ref: string; uuid: string }

export interface XoXapi {
  connect(): Promise<void>
  disconnect(): Promise<void>
  barrier(): Promise<void>
  objectsFetched: Promise<void>
  getObject(idOrRef: string): XoXapiObject
  getRecordByUuid(type: string, uuid: string): Promise<XoXapiObject>
  objects: { indexes: { type: Record<string, Record<string, XoXapiObject>> } }
}

/** XO's own XAPI client (@xen-orchestra/xapi) connected to a XAPI (the simulator in the tests). */
export async function xoXapi(sim: { url: string; user: string; password: string }): Promise<XoXapi> {
  const { Xapi } = (await import('@xen-orchestra/xapi')) as { Xapi: new (opts: Record<string, unknown>) => XoXapi }
  const xapi = new Xapi({ url: sim.url, auth: { user: sim.user, password: sim.password }, allowUnauthorized: true })
  await xapi.connect()
  await xapi.objectsFetched
  return xapi
}

/** What XO's exportIncrementalVm returns (the disks are XO disk sources, to close). */
interface XoDeltaExport {
  vbds: Record<string, unknown>
  vdis: Record<string, unknown>
  vifs: Record<string, unknown>
  vtpms: unknown[]
  disks: Record<string, XoDisk & { isDifferencing(): boolean }>
}

export async function xoExportIncrementalVm(snapshot: XoXapiObject, baseVdis: Record<string, XoXapiObject>): Promise<XoDeltaExport> {
  const m = (await import('@xen-orchestra/backups/_incrementalVm.mjs')) as { exportIncrementalVm: (vm: unknown, base: unknown, opts: unknown) => Promise<XoDeltaExport> }
  return m.exportIncrementalVm(snapshot, baseVdis, { preferNbd: false })
}

/**
 * The registry's xo-remote-parser (0.5.0) returns {} for S3 URLs, and @xen-orchestra/fs parses
 * `remote.url` itself: its `parse` is wrapped so S3 URLs give the object XO's current parser makes
 * (type 's3', protocol https for s3:// and http for s3+http://, host, path = the URL's path, decoded
 * username/password, region from the #fragment, JSON-valued query options). Other URLs are unchanged.
 */
export function patchRemoteParserForS3(): void {
  const parser = require('xo-remote-parser') as { parse: (url: string) => Record<string, unknown>; __s3?: true }
  if (parser.__s3 === true) return
  const original = parser.parse
  parser.parse = (url: string) => {
    if (!/^s3(\+http)?:\/\//.test(url)) return original(url)
    const u = new URL(url.replace(/^s3(\+http)?:/, 'http:'))
    const options = Object.fromEntries([...u.searchParams].map(([k, v]) => [k, JSON.parse(v) as unknown]))
    return {
      ...options,
      protocol: url.startsWith('s3://') ? 'https' : 'http',
      type: 's3',
      region: u.hash.length < 2 ? undefined : u.hash.slice(1),
      host: u.host,
      path: u.pathname,
      username: decodeURIComponent(u.username),
      password: decodeURIComponent(u.password),
    }
  }
  parser.__s3 = true
}

/**
 * What the backup engine needs from the outside, as narrow interfaces ("ports"): the XAPI calls of one
 * VM's backup, the disk exporter (a thread-pool task in production), and what the job runner gives a
 * processor or a thread task (BackupJobContext, StreamTaskRunner, StreamTask). The VM backup itself
 * (vm-backup.ts) depends only on these; the engine never imports the runner (src/workers), whose types
 * satisfy these ports. The disk export and restore paths use the XAPI transports (src/xapi) directly.
 */
import type { JsonValue, SerializedError } from '../common/errors.js'
import type { Logger } from '../common/log.js'
import type { Config } from '../config/index.js'
import type { JobProgress } from '../queue/client.js'
import type { LogTask, TaskLogEvent } from '../queue/task-log.js'
import type { TaskKind, TaskOf } from '../queue/tasks.js'
import type { Remote } from '../remotes/remote.js'
import type { RemoteOptions } from '../remotes/url-types.js'
import type { NbdExportPlan } from './nbd-source.js'
import type { MirrorCopier } from './mirror-backup.js'
import type { XvaExporter } from './xva-export.js'
import type { XvaImporter } from './xva-import.js'
import type { NbdXapi } from './nbd-plan.js'
import type { XvaExportDescriptor } from '../xapi/descriptors.js'
import type { DiskImportInput, DiskImportProgress, DiskImportResult } from './disk-import.js'

/** A XAPI record as plain JSON. */
export type Rec = Record<string, unknown>

export interface XapiObject {
  ref: string
  uuid: string
  record: Rec
}

export interface XapiDisk {
  vbd: XapiObject
  vdi: XapiObject
  /** uuid of the VDI this one is a snapshot of (for a snapshot's disks), else its own uuid */
  sourceVdiUuid: string
}

export interface BackupXapi {
  /** ref, uuid and record of a VM (not a snapshot); XapiError when it does not exist */
  getVm(vmUuid: string): Promise<XapiObject>
  /** snapshots of a VM (any job; the caller filters on other_config) */
  listSnapshots(vmRef: string): Promise<XapiObject[]>
  /** takes a snapshot (checkpoint when asked) and returns it */
  snapshot(vmRef: string, nameLabel: string, options: { checkpoint: boolean; signal?: AbortSignal }): Promise<XapiObject>
  /** `VM.set_name_label` */
  setNameLabel(vmRef: string, nameLabel: string): Promise<void>
  setOtherConfig(cls: 'VM' | 'VDI', ref: string, key: string, value: string | null): Promise<void>
  /** sets (null: removes) several other_config entries at once; later reads (getRecord, listDisks) see them */
  setOtherConfigEntries(cls: 'VM' | 'VDI', ref: string, entries: Record<string, string | null>): Promise<void>
  /** a fresh record read from XAPI (not a cache) */
  getRecord(cls: 'VM' | 'VDI' | 'network' | 'PIF' | 'SR', ref: string): Promise<XapiObject>
  /** contents of the VM's (or snapshot's) VTPMs (`VTPM.get_contents`), in `VTPMs` order; [] without */
  vtpmContents(vmRef: string): Promise<string[]>
  /** disks (VBD type Disk with a VDI) of a VM or snapshot */
  listDisks(vmRef: string): Promise<XapiDisk[]>
  listVifs(vmRef: string): Promise<XapiObject[]>
  destroySnapshot(ref: string): Promise<void>
  /**
   * Every real VM of the pool (no snapshot, template or control domain) in XO's object shape, for
   * smart-mode patterns (smart-mode.ts); optional: a port without it cannot run smart-mode jobs
   */
  listVmObjects?(): Promise<Rec[]>
  /** NBD and CBT calls (nbd-plan.ts); absent: disks are read over HTTP only */
  nbd?: NbdXapi
  /** a VM's (or snapshot's) XVA export (`GET /export/`, XAPI's `use_compression`) for a thread; optional: full backups need it */
  xvaExportDescriptor?(vmRef: string, useCompression: string): Promise<XvaExportDescriptor>
  /** serializable descriptor a worker thread opens to stream the VDI as VHD (a delta against baseRef) */
  exportDescriptor(vdiRef: string, options: { baseRef?: string }): Promise<JsonValue>
}

/** One remote a disk is written to. */
export interface DiskTarget {
  /** remote id from the task */
  id: string
  /** remote URL (credentials included: kept in memory, never logged or stored) */
  url: string
  options: RemoteOptions
  /** remote-root path of the VHD to write (`.vhd` or `.alias.vhd`) */
  path: string
  /** write a VhdDirectory (alias + data dir) rather than a VhdFile */
  directory: boolean
  /** VhdDirectory block compression (ignored for a VhdFile) */
  compression: 'none' | 'brotli'
  /** for a delta: the parent on this target */
  parent?: { path: string; uuid: string }
}

export interface DiskExportInput {
  /** from BackupXapi.exportDescriptor */
  descriptor: JsonValue
  /** uuid written into the VHD footer: the snapshot VDI's uuid (XO matches bases by it) */
  vdiUuid: string
  /** the export is a delta against this VDI uuid (it must equal each target's parent uuid) */
  baseVdiUuid?: string
  targets: DiskTarget[]
  /** bytes per second, 0 = unlimited */
  maxExportRateBytesPerSecond: number
  /** no byte from XAPI for this long fails the export (default 5 minutes) */
  exportInactivityTimeoutMs?: number
  /** read over NBD (nbd-plan.ts builds it when the settings ask and the pool allows) */
  nbd?: NbdExportPlan
}

export interface DiskExportResult {
  /** bytes read from XAPI */
  readBytes: number
  /** data bytes of the VHD (blocks + metadata) as written to each target */
  sizeBytes: number
  blocks: number
  differencing: boolean
  succeeded: string[]
  failed: { id: string; error: SerializedError }[]
  durationMs: number
  /** how the disk was read (absent from exporters that predate NBD: http) */
  transport?: 'nbd' | 'http'
  nbdConnections?: number
  /** for the task log: NBD fallbacks, fewer connections than asked */
  warnings?: string[]
}

export interface DiskProgress {
  readBytes: number
  /** expected total, when known */
  totalBytes?: number
}

/**
 * Reports a remote's `op` and `bytes` events (bytes written, operations, their durations and, on the
 * main thread, `remote_up`) as metrics labelled by `remoteId` (the id from the task, never a URL).
 * Attach before `open()` so that a failed open counts; returns the function that detaches.
 */
export type RemoteMetricsHook = (remote: Pick<Remote, 'on' | 'off'>, remoteId: string) => () => void

/** Metric hooks of a disk export (the thread task turns them into metric deltas). */
export interface DiskMetrics {
  bytesRead(bytes: number): void
  /** each remote opened for the disk (its bytes written are counted from its events) */
  attachRemote: RemoteMetricsHook
  exportDuration(seconds: number): void
}

export interface DiskExportOptions {
  signal: AbortSignal
  onProgress?: (p: DiskProgress) => void
  metrics?: DiskMetrics
}

export type DiskExporter = (input: DiskExportInput, options: DiskExportOptions) => Promise<DiskExportResult>

/**
 * The thread pool as the engine sees it: run one named stream task in a thread. The runner's StreamPool
 * (src/workers) is one; the engine never imports the runner.
 */
export interface StreamTaskRunner {
  run(taskName: 'backup.disk', input: DiskExportInput, options: StreamRunOptions<DiskProgress>): Promise<DiskExportResult>
  run(taskName: 'backup.restoreDisk', input: DiskImportInput, options: StreamRunOptions<DiskImportProgress>): Promise<DiskImportResult>
  run(taskName: 'backup.xva', input: Parameters<XvaExporter>[0], options: StreamRunOptions<ProgressOf<XvaExporter>>): Promise<Awaited<ReturnType<XvaExporter>>>
  run(taskName: 'backup.restoreXva', input: Parameters<XvaImporter>[0], options: StreamRunOptions<ProgressOf<XvaImporter>>): Promise<Awaited<ReturnType<XvaImporter>>>
  run(taskName: 'mirror.copy', input: Parameters<MirrorCopier>[0], options: StreamRunOptions<ProgressOf<MirrorCopier>>): Promise<Awaited<ReturnType<MirrorCopier>>>
}

/** The progress an exporter, importer or copier port reports (what its thread task posts). */
export type ProgressOf<F extends (input: never, options: never) => unknown> = Parameters<F>[1] extends { onProgress?: (progress: infer P) => void } ? P : never

interface StreamRunOptions<P = JsonValue> {
  signal?: AbortSignal
  /** the task's progress, as its thread posted it (typed by the task) */
  onProgress?: (progress: P) => void
}

/** What a stream task of the engine receives in its thread (the runner's ThreadTaskContext is one). */
export interface StreamTaskContext<P = JsonValue> {
  /** aborted by a cooperative cancel */
  signal: AbortSignal
  /** plain data (structured-cloned to the main thread), of the task's own progress type */
  progress: (progress: P) => void
  counter: (metric: string, labels: Record<string, string>, value?: number) => void
  observe: (metric: string, labels: Record<string, string>, value: number) => void
}

/** A stream task module's default export (registered by the runner in src/workers/thread-tasks.ts). */
export type StreamTask<I, O, P = JsonValue> = (input: I, ctx: StreamTaskContext<P>) => Promise<O>

/**
 * What a queue processor of the engine receives from the job runner (src/workers' JobContext is one):
 * the task, the cancel signal, the run's root task in the task log, progress, the logger, the backup
 * defaults and the stream pool.
 */
export interface BackupJobContext<K extends TaskKind> {
  task: TaskOf<K>
  signal: AbortSignal
  root: LogTask
  log: (event: TaskLogEvent) => void
  progress: (progress: JobProgress) => void
  logger: Logger
  config: Pick<Config, 'backup'>
  pool: StreamTaskRunner
  /** the queue job: `isRetry` when an earlier attempt started (stalled or retried), `enqueuedAt` in ms */
  job?: { isRetry: boolean; enqueuedAt: number }
}

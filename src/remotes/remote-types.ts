/**
 * The types of the remote contract (remote.ts): stats, listings, stream options, probe results, the
 * `op`/`bytes` events the metrics layer listens to, and the capabilities a remote announces so callers
 * ask what a remote can do instead of testing its class.
 */

export type RemoteKind = 'file' | 'nfs' | 'smb' | 's3'

export interface RemoteStat {
  /** size in bytes (0 for directories) */
  size: number
  isDirectory: boolean
  /** last modification, ms since epoch (0 when the backend has none) */
  mtimeMs: number
}

export interface ListOptions {
  /** list every file below, with paths relative to the listed directory */
  recursive?: boolean
  /** include entries whose name starts with `.` (temporaries); default false */
  includeHidden?: boolean
}

export interface ListEntry {
  /** path relative to the listed directory (just the name when not recursive) */
  path: string
  isDirectory: boolean
}

export interface WriteStreamOptions {
  /** expected final size when known: S3 picks its part size from it */
  expectedSizeBytes?: number
  /** refuse (EEXIST) when the final name exists; default false (replace) */
  exclusive?: boolean
  signal?: AbortSignal
}

export interface ReadStreamOptions {
  /** first byte, default 0 */
  start?: number
  /** last byte, inclusive (as node:fs); default end of file */
  end?: number
  signal?: AbortSignal
}

export interface ReadFileOptions {
  signal?: AbortSignal
  /** where to read the file when the transport can: a buffer of at least `sizeBytes`, or undefined (Remote.readFile) */
  into?: (sizeBytes: number) => Buffer | undefined
}

export interface WriteFileOptions {
  exclusive?: boolean
  signal?: AbortSignal
}

export interface RemoteTestResult {
  /** size of the probe file */
  sizeBytes: number
  writeDurationMs: number
  readDurationMs: number
  writeMiBps: number
  readMiBps: number
  /** round trip of a small operation (stat) */
  latencyMs: number
}

export interface RemoteOpEvent {
  op: string
  durationMs: number
  ok: boolean
  /** error code when !ok */
  code?: string
}

export interface RemoteBytesEvent {
  direction: 'read' | 'write'
  bytes: number
}

export interface RemoteEvents {
  op: [RemoteOpEvent]
  bytes: [RemoteBytesEvent]
}

/**
 * What a remote can do, asked by callers instead of `instanceof` (so a wrapper such as EncryptedRemote
 * answers for itself).
 */
export interface RemoteCapabilities {
  /**
   * every backup on this remote is a VhdDirectory, whatever the job's useVhdDirectory says (Xen
   * Orchestra's handler.useVhdDirectory() answering true): S3, and an encrypted remote (files read whole)
   */
  forcesVhdDirectory: boolean
  /**
   * a write stream is done with a chunk once that chunk's write callback fired, so the caller may reuse
   * its buffer then (node:fs); false where a writer may still hold it (S3 parts, NFS/SMB write windows)
   */
  releasesChunkOnWriteCallback: boolean
}

/**
 * One file opened for positioned reads (`Remote.openFile`): what a VHD chain reader holds for a VhdFile
 * instead of opening a read stream per block. `size` is the file's at open: backups are published by
 * rename, never rewritten in place. Close it when done (idempotent); reads after close are EINVAL.
 */
export interface RemoteFile {
  /** size in bytes when opened */
  readonly size: number
  /**
   * Reads up to `length` bytes at `position` of the file into `buffer` at `offset`; resolves with the
   * number read, fewer than `length` only at the end of the file.
   */
  read(buffer: Uint8Array, offset: number, length: number, position: number, signal?: AbortSignal): Promise<number>
  close(): Promise<void>
}

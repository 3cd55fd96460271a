/**
 * Parsed forms of Xen Orchestra remote URLs (see url.ts for parse/format). Field names follow XO's
 * parser so values map one to one. Every kind may carry XO's query options (`?useVhdDirectory=true`,
 * `?encryptionKey="..."`, `?allowUnauthorized=true`) in `params`, JSON values as XO stores them.
 */

/** A query option value as XO stores it (each value JSON-encoded in the query string). */
export type RemoteUrlParam = string | number | boolean | null
export type RemoteUrlParams = Record<string, RemoteUrlParam>

export interface FileRemoteUrl {
  type: 'file'
  /** absolute directory on this host */
  path: string
  params?: RemoteUrlParams
}

export interface NfsRemoteUrl {
  type: 'nfs'
  host: string
  /** NFS port when not 2049 (then portmapper is skipped for NFS) */
  port?: number
  /** export path, e.g. /export/backups */
  path: string
  params?: RemoteUrlParams
}

export interface SmbRemoteUrl {
  type: 'smb'
  /** server host (XO keeps `host\share` together; we split them) */
  host: string
  share: string
  domain: string
  username: string
  password: string
  /** sub-directory inside the share, `/`-separated, no leading slash ('' for the share root) */
  path: string
  params?: RemoteUrlParams
}

export interface S3RemoteUrl {
  type: 's3'
  /** s3 (https) or s3+http */
  protocol: 'https' | 'http'
  host: string
  port?: number
  bucket: string
  /** key prefix inside the bucket, no leading or trailing slash ('' for the bucket root) */
  path: string
  accessKeyId: string
  secretAccessKey: string
  /** XO writes it as the URL fragment (`#us-east-1`); `?region=` is accepted too */
  region?: string
  /** other query parameters (useVhdDirectory, allowUnauthorized, ...) kept for round trips */
  params?: RemoteUrlParams
}

export type RemoteUrl = FileRemoteUrl | NfsRemoteUrl | SmbRemoteUrl | S3RemoteUrl

/** Options a remote is configured with besides its URL (XO's remote options). */
export interface RemoteOptions {
  /** client-side encryption key (32 bytes) — see encryption.ts */
  encryptionKey?: string
  /** write VhdDirectory instead of VhdFile backups */
  useVhdDirectory?: boolean
  /** for S3: upload part size floor in bytes (the part size grows with the expected size) */
  uploadPartSizeBytes?: number
  /** for S3: parts in flight */
  uploadConcurrency?: number
  /** for S3: accept self-signed certificates */
  allowUnauthorized?: boolean
  /** for S3: path-style requests (default: true unless the host is *.amazonaws.com) */
  s3PathStyle?: boolean
  /** for S3: attempts per request, retries included (default 5) */
  s3MaxAttempts?: number
  /** for SMB: protocol version cap, e.g. '3.1.1' */
  protocolVersion?: string
  /** for SMB: TCP port when not 445 (XO's smb:// URL has no port field; tests and odd setups use this) */
  smbPort?: number
  /** for SMB: sign every message even when the server does not require it */
  smbRequireSigning?: boolean
  /** for SMB: READ/WRITE request size cap in bytes (default 1 MiB; the server's max also caps it) */
  smbIoSizeBytes?: number
  /** for SMB: READ/WRITE requests in flight per stream (default 8) */
  smbWindow?: number
  /** for NFS: AUTH_SYS uid/gid and WRITEs in flight */
  uid?: number
  gid?: number
  nfsWindow?: number
}

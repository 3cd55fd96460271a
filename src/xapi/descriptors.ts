/**
 * The plain data of an XAPI HTTP transfer that a pool thread runs without an XAPI client: the base URL,
 * the session, the refs and the XAPI task the transfer runs under. `XapiClient` makes them
 * (`importDescriptor`, `vmExportDescriptor`, `vmImportDescriptor`; a disk export's is
 * `VdiExportDescriptor` in export.ts, next to its options); restore-import.ts and src/xva/http.ts open them.
 */

/** Plain data of one `PUT /import_raw_vdi/?session_id&vdi&format[&task_id]`. */
export interface VdiImportDescriptor {
  /** XAPI base URL, without credentials */
  url: string
  sessionId: string
  vdiRef: string
  format: 'vhd' | 'raw'
  /** XAPI task the import runs under (progress, cancel) */
  taskRef: string
  allowUnauthorized: boolean
}

/** A VM export as XVA (`GET /export/?ref&use_compression&task_id`), plain data for a thread. */
export interface XvaExportDescriptor {
  url: string
  sessionId: string
  vmRef: string
  /** XAPI's `use_compression`: `true` (gzip), `zstd` or `false` */
  useCompression: string
  taskRef: string
  allowUnauthorized: boolean
}

/** An XVA import onto an SR (`PUT /import/?sr_id&task_id`), plain data for a thread. */
export interface XvaImportDescriptor {
  url: string
  sessionId: string
  srRef: string
  taskRef: string
  allowUnauthorized: boolean
}

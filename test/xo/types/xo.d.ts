// Untyped JavaScript modules of Xen Orchestra used as test oracles; test/xo/oracle.ts gives them shapes.
declare module '@xen-orchestra/backups/RemoteAdapter.mjs' {
  export const RemoteAdapter: unknown
}
declare module '@xen-orchestra/backups/formatVmBackups.mjs' {
  export const formatVmBackups: unknown
}
declare module '@xen-orchestra/backups/_incrementalVm.mjs' {
  export const exportIncrementalVm: unknown
}
declare module '@xen-orchestra/xapi' {
  export const Xapi: unknown
}
declare module '@xen-orchestra/backups/Backup.mjs' {
  export const createRunner: unknown
}
declare module '@xen-orchestra/backups/RestoreMetadataBackup.mjs' {
  export const RestoreMetadataBackup: unknown
}
declare module '@xen-orchestra/backups/_runners/_PoolMetadataBackup.mjs' {
  export const PoolMetadataBackup: unknown
}
declare module '@xen-orchestra/backups/_runners/_XoMetadataBackup.mjs' {
  export const XoMetadataBackup: unknown
}

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

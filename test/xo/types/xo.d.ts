// Untyped JavaScript modules of Xen Orchestra used as test oracles; test/xo/oracle.ts gives them shapes.
declare module '@xen-orchestra/backups/RemoteAdapter.mjs' {
  export const RemoteAdapter: unknown
}
declare module '@xen-orchestra/backups/formatVmBackups.mjs' {
  export const formatVmBackups: unknown
}

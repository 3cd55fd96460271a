/**
 * Getting the root file handle of an export: portmapper GETPORT (RFC 1833, version 2 over TCP) to
 * find the MOUNT and NFS ports, then MOUNT3 MNT (RFC 1813 appendix I) on the export path. When MNT
 * fails, the server's EXPORT list is fetched so the error names what it does export.
 */
import { hostname } from 'node:os'
import type { Writer } from '@jsonjoy.com/buffers/lib/Writer.js'
import { MountEncoder } from '@jsonjoy.com/json-pack/lib/nfs/v3/mount/MountEncoder.js'
import { MountDecoder } from '@jsonjoy.com/json-pack/lib/nfs/v3/mount/MountDecoder.js'
import { MountMntRequest, MountExportRequest, MountMntResponse, MountExportResponse } from '@jsonjoy.com/json-pack/lib/nfs/v3/mount/messages.js'
import type { MountProc } from '@jsonjoy.com/json-pack/lib/nfs/v3/mount/constants.js'
import { RemoteError } from '../../common/errors.js'
import { RpcConnection, type AuthSys } from './rpc.js'
import { mount3Error } from './status.js'

const PORTMAP_PROGRAM = 100000
const MOUNT_PROGRAM = 100005
export const NFS_PROGRAM = 100003
const PORTMAP_PORT = 111
const IPPROTO_TCP = 6
const MNT = 1 as MountProc
const EXPORT = 5 as MountProc

export interface Endpoint {
  host: string
  label: string
  connectTimeoutMs: number
  callTimeoutMs: number
}

export function defaultMachineName(): string {
  return hostname().slice(0, 255)
}

/** Asks the portmapper for the TCP port of `program` version `version`; 0 means "not registered". */
export async function getPort(ep: Endpoint, program: number, version: number): Promise<number> {
  const rpc = await RpcConnection.open({ host: ep.host, port: PORTMAP_PORT, callTimeoutMs: ep.callTimeoutMs, connectTimeoutMs: ep.connectTimeoutMs, label: `${ep.label} (portmapper)` })
  try {
    const reader = await rpc.call(PORTMAP_PROGRAM, 2, 3, 'portmapper GETPORT', (w: Writer) => {
      w.u32(program)
      w.u32(version)
      w.u32(IPPROTO_TCP)
      w.u32(0)
    })
    const port = reader.u32()
    if (port === 0) {
      throw new RemoteError('ECONNRESET', `${ep.label}: the portmapper of ${ep.host} has no TCP registration for program ${program} version ${version}; is the NFS server (v3 over TCP) running?`, {
        fields: { detail: 'not registered', program, version },
      })
    }
    return port
  } finally {
    rpc.close()
  }
}

function mountCall(rpc: RpcConnection, proc: MountProc, what: string, request: MountMntRequest | MountExportRequest): Promise<import('@jsonjoy.com/buffers/lib/Reader.js').Reader> {
  return rpc.call(MOUNT_PROGRAM, 3, proc, what, (w: Writer) => {
    new MountEncoder(w).writeMessage(request, proc, true)
  })
}

async function listExports(rpc: RpcConnection): Promise<string[] | undefined> {
  try {
    const reader = await mountCall(rpc, EXPORT, 'MOUNT EXPORT', new MountExportRequest())
    const res = new MountDecoder().decodeMessage(reader, EXPORT, false)
    if (!(res instanceof MountExportResponse)) return undefined
    const out: string[] = []
    for (let node = res.exports; node !== undefined; node = node.next) out.push(node.dir)
    return out
  } catch {
    return undefined // only used to enrich an error message
  }
}

interface MountedExport {
  /** handle of the mounted export */
  root: Uint8Array
  /** the export that was mounted */
  exportPath: string
  /** path components below it still to LOOKUP (the URL named a directory inside the export) */
  rest: string[]
}

/**
 * MOUNT3 MNT of `path`. Like a kernel mount, a path below an export works: when MNT of the whole path
 * fails and the server's EXPORT list has a parent of it, that export is mounted and the remaining
 * components are returned for the caller to LOOKUP.
 */
export async function mountExport(ep: Endpoint, path: string, auth: AuthSys, mountPort?: number): Promise<MountedExport> {
  const port = mountPort ?? (await getPort(ep, MOUNT_PROGRAM, 3))
  const rpc = await RpcConnection.open({ host: ep.host, port, auth, callTimeoutMs: ep.callTimeoutMs, connectTimeoutMs: ep.connectTimeoutMs, label: `${ep.label} (mountd)` })
  try {
    const first = await mnt(rpc, ep, path)
    if (first.root !== undefined) return { root: first.root, exportPath: path, rest: [] }
    const exports = await listExports(rpc)
    const parent = (exports ?? []).filter((e) => path.startsWith(e.endsWith('/') ? e : `${e}/`)).sort((a, b) => b.length - a.length)[0]
    if (parent !== undefined) {
      const second = await mnt(rpc, ep, parent)
      if (second.root !== undefined) return { root: second.root, exportPath: parent, rest: path.slice(parent.length).split('/').filter((p) => p !== '') }
    }
    throw mount3Error(first.status, path, ep.label, exports)
  } finally {
    rpc.close()
  }
}

async function mnt(rpc: RpcConnection, ep: Endpoint, path: string): Promise<{ root?: Uint8Array; status: number }> {
  const reader = await mountCall(rpc, MNT, 'MOUNT MNT', new MountMntRequest(path))
  const res = new MountDecoder().decodeMessage(reader, MNT, false)
  if (!(res instanceof MountMntResponse)) throw new RemoteError('EIO', `${ep.label}: undecodable MOUNT reply`, { fields: { detail: 'bad MNT reply' } })
  if ((res.status as number) !== 0 || res.mountinfo === undefined) return { status: res.status }
  const flavors = res.mountinfo.authFlavors
  if (!flavors.includes(1) && flavors.length > 0) {
    throw new RemoteError('EACCES', `${ep.label}: the export "${path}" does not accept AUTH_SYS (flavors ${flavors.join(', ')}); export it with SecType = sys`, {
      fields: { detail: 'no AUTH_SYS', flavors },
    })
  }
  const fh = res.mountinfo.fhandle.data
  return { root: fh.uint8.slice(fh.x, fh.end), status: 0 }
}

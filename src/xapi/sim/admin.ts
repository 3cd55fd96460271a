/**
 * The simulator's controls, for tests and benchmarks: what a test does to the pool (change disk blocks,
 * inject faults, set SR capacity, guest behaviour, CBT and NBD faults) and reads from it (VMs, a disk's
 * content, pool dumps). The same controls are the handle's methods (index.ts) and, for another process,
 * the admin HTTP API under `/sim/` (HTTP basic auth with the simulator's credentials):
 * `GET /sim/vms`, `POST /sim/vms/<uuid>/write` `{ blocks? , ratio? }`, `POST /sim/faults` `<fault>`,
 * `DELETE /sim/faults`, `GET /sim/vdis/<uuid>/raw` (same bytes as `format=raw`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Readable } from 'node:stream'
import { UsageError } from '../../common/errors.js'
import type { SimCbt } from './cbt.js'
import type { PatternPool } from './disk-content.js'
import type { ExportContext } from './export.js'
import { parseSimFault, type SimFault } from './faults.js'
import type { SimNbdFault, SimNbdHandle } from './nbd-wiring.js'
import { poolDump } from './pool-dump.js'
import type { SimPool, SimVmInfo } from './pool.js'
import { readJson, sendJson } from './server.js'
import { XapiFailure } from './store.js'
import type { GuestBoot, GuestScript } from './vm-ops.js'
import { VHD_BLOCK_BYTES } from './vhd-encoder.js'

export interface SimControls {
  listVms: () => SimVmInfo[]
  /** changes blocks of every disk of the VM (a count, or a ratio of each disk's blocks) */
  writeBlocks: (vmUuid: string, amount: { blocks?: number; ratio?: number }) => { vdiUuid: string; vdiRef: string; blocks: number[] }[]
  setFault: (fault: SimFault) => void
  clearFaults: () => void
  /** the current content of a VDI (same bytes as `export_raw_vdi?format=raw`) */
  rawDiskContent: (vdiUuid: string) => Readable
  /** a capacity for an SR (0 = unlimited): imports fail with SR_BACKEND_FAILURE_44 once it is full */
  setSrCapacity: (srUuid: string, capacityBytes: number) => void
  /** how guests of VMs started from now on report their tools: at once (`normal`), `never`, or on `reportGuestTools` (`manual`) */
  setGuestBoot: (mode: GuestBoot) => void
  /** what guests answer to XO's health-check script (default success) */
  setGuestScript: (answer: GuestScript) => void
  /** the guest of a running VM reports its tools now (a late boot) */
  reportGuestTools: (vmUuid: string) => void
  /** NBD path faults (nbd-server.ts); needs the `nbd` option */
  setNbdFault: (fault: SimNbdFault) => void
  clearNbdFaults: () => void
  /** the next `count` VDI.list_changed_blocks answer a bitmap one byte short (cbt.ts) */
  setCbtBadBitmapLength: (count: number) => void
  /** what a migration does to a tracked VDI: a new CBT log, unrelated to its snapshots' */
  resetCbtChain: (vdiUuid: string) => void
  /** the pool database dump `GET /pool/xmldbdump` serves now (pool metadata backups) */
  poolDump: () => Buffer
  /** the dumps `PUT /pool/xmldbdump` accepted (pool metadata restores), oldest first */
  restoredPoolDumps: () => Buffer[]
}

/** The parts of a running simulator the controls act on. */
interface SimParts extends ExportContext {
  cbt: SimCbt
  nbd: SimNbdHandle
  /** the dumps `PUT /pool/xmldbdump` accepted, appended by its handler */
  restoredDumps: Buffer[]
}

/** The current content of a VDI as a stream, from a copy taken now (later writes do not show). */
function rawDiskStream(pool: SimPool, patterns: PatternPool, vdiUuid: string): Readable {
  const disk = pool.disks.get(pool.store.refByUuid('VDI', vdiUuid))
  if (disk === undefined) throw new XapiFailure('UUID_INVALID', ['VDI', vdiUuid])
  const snapshot = disk.copy()
  let b = 0
  return new Readable({
    highWaterMark: 4 * VHD_BLOCK_BYTES,
    read() {
      for (;;) {
        if (b >= snapshot.blockCount) return void this.push(null)
        const g = snapshot.generations.get(b)
        const parts = g === undefined ? [Buffer.alloc(VHD_BLOCK_BYTES)] : snapshot.blockParts(patterns, b, g)
        b++
        let more = true
        for (const p of parts) more = this.push(p)
        if (!more) return
      }
    },
  })
}

export function simControls(parts: SimParts): SimControls {
  const { pool, rpc, faults, cbt, nbd } = parts
  const vmRefByUuid = (uuid: string): string => pool.store.refByUuid('VM', uuid)
  return {
    poolDump: () => poolDump(parts),
    restoredPoolDumps: () => [...parts.restoredDumps],
    listVms: () => pool.listVms(),
    writeBlocks: (vmUuid, amount) => pool.writeBlocks(vmRefByUuid(vmUuid), amount),
    setFault: (fault) => {
      const f = parseSimFault(fault)
      if (f.kind === 'expire-session') rpc.expireSessions()
      else faults.add(f)
    },
    clearFaults: () => faults.clear(),
    setNbdFault: (fault) => nbd.setFault(fault),
    clearNbdFaults: () => nbd.clearFaults(),
    setCbtBadBitmapLength: (count) => {
      cbt.badBitmapLength = count
    },
    resetCbtChain: (vdiUuid) => cbt.resetChain(pool.store.refByUuid('VDI', vdiUuid)),
    setSrCapacity: (srUuid, capacityBytes) => {
      if (!Number.isSafeInteger(capacityBytes) || capacityBytes < 0) throw new UsageError(`xapi-sim: capacityBytes must be a whole number >= 0, got ${capacityBytes}`)
      pool.store.update('SR', pool.store.refByUuid('SR', srUuid), (r) => (r.physical_size = capacityBytes))
    },
    setGuestBoot: (mode) => {
      rpc.vmOps.guestBoot = mode
    },
    setGuestScript: (answer) => {
      rpc.vmOps.guestScript = answer
    },
    reportGuestTools: (vmUuid) => rpc.vmOps.reportGuestTools(vmRefByUuid(vmUuid)),
    rawDiskContent: (vdiUuid) => rawDiskStream(pool, parts.patterns, vdiUuid),
  }
}

/** One request of the admin API: needs HTTP basic auth with the simulator's credentials. */
export async function handleAdmin(controls: SimControls, credentials: { user: string; password: string }, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const expected = `Basic ${Buffer.from(`${credentials.user}:${credentials.password}`).toString('base64')}`
  if ((req.headers.authorization ?? '') !== expected) {
    res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="xapi-sim"', 'Content-Type': 'application/json' })
    res.end(JSON.stringify({ error: 'admin endpoints need HTTP basic auth with the simulator credentials' }))
    return
  }
  try {
    let m: RegExpExecArray | null
    if (req.method === 'GET' && url.pathname === '/sim/vms') return sendJson(res, 200, controls.listVms())
    if (req.method === 'POST' && (m = /^\/sim\/vms\/([^/]+)\/write$/.exec(url.pathname)) !== null) {
      const body = (await readJson(req)) as { blocks?: unknown; ratio?: unknown }
      const amount: { blocks?: number; ratio?: number } = {}
      if (typeof body.blocks === 'number') amount.blocks = body.blocks
      else if (typeof body.ratio === 'number') amount.ratio = body.ratio
      else return sendJson(res, 400, { error: 'body must be {"blocks": <count>} or {"ratio": <0..1>}' })
      return sendJson(res, 200, controls.writeBlocks(decodeURIComponent(m[1] ?? ''), amount))
    }
    if (req.method === 'POST' && url.pathname === '/sim/faults') {
      controls.setFault(parseSimFault(await readJson(req)))
      return sendJson(res, 200, { ok: true })
    }
    if (req.method === 'DELETE' && url.pathname === '/sim/faults') {
      controls.clearFaults()
      return sendJson(res, 200, { ok: true })
    }
    if (req.method === 'GET' && (m = /^\/sim\/vdis\/([^/]+)\/raw$/.exec(url.pathname)) !== null) {
      const stream = controls.rawDiskContent(decodeURIComponent(m[1] ?? ''))
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' })
      stream.pipe(res)
      return
    }
    sendJson(res, 404, { error: `no admin endpoint ${req.method} ${url.pathname}` })
  } catch (error) {
    const status = error instanceof XapiFailure ? 404 : 400
    sendJson(res, status, { error: error instanceof Error ? error.message : String(error) })
  }
}

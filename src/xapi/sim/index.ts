/**
 * The XAPI simulator: an HTTP(S) server that the unmodified `xen-api` package drives like a real pool.
 *
 * - `POST /jsonrpc`: XAPI JSON-RPC (responses are `Content-Type: application/json`, errors are
 *   `{ code, message: <XAPI code>, data: [params] }` as XAPI sends them);
 * - `GET /export_raw_vdi/`: disk exports (see export.ts);
 * - `PUT /import_raw_vdi/?format=vhd`: disk imports into a VDI (`VDI.create`d), see import.ts;
 * - `GET /export/?ref|uuid&use_compression` and `PUT /import/?sr_id`: whole VMs as XVA (xva-export.ts,
 *   xva-import.ts);
 * - admin API (HTTP basic auth with the simulator's credentials), mirrored by the handle's methods:
 *   `GET /sim/vms`, `POST /sim/vms/<uuid>/write` `{ blocks? , ratio? }`, `POST /sim/faults` `<fault>`,
 *   `DELETE /sim/faults`, `GET /sim/vdis/<uuid>/raw` (same bytes as `format=raw`);
 * - extra SRs and networks (`srs`, `networks` options), SR capacity, guest boot behaviour (vm-ops.ts).
 *
 * Everything is deterministic from `seed`; disks are sparse and generated on the fly (disk-content.ts).
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { Readable } from 'node:stream'
import { UsageError } from '../../common/errors.js'
import { PatternPool } from './disk-content.js'
import { handleExport } from './export.js'
import { handleImport } from './import.js'
import { handlePoolDump, poolDump } from './pool-dump.js'
import { handleXvaExport } from './xva-export.js'
import { handleXvaImport } from './xva-import.js'
import { FaultSet, parseSimFault, type SimFault } from './faults.js'
import { SimPool, type SimVmInfo } from './pool.js'
import { SimRpc } from './rpc.js'
import { XapiFailure, type XapiValue } from './store.js'
import { SimTasks } from './tasks.js'
import { SimCbt } from './cbt.js'
import { installNbd, type SimNbdFault, type SimNbdOptions } from './nbd-wiring.js'
import type { GuestBoot, GuestScript } from './vm-ops.js'
import { VHD_BLOCK_BYTES } from './vhd-encoder.js'

export type { SimFault } from './faults.js'
export type { SimVmInfo } from './pool.js'
export type { GuestBoot, GuestScript } from './vm-ops.js'
export type { SimNbdFault, SimNbdOptions } from './nbd-wiring.js'

export interface XapiSimulatorOptions {
  vms: number
  diskSizeBytes: number
  disksPerVm: number
  /** share of blocks holding data initially, 0..1 */
  fillRatio: number
  seed: number
  /** default 127.0.0.1 */
  host?: string
  /** 0 (default) = a free port */
  port?: number
  /** default root */
  user?: string
  /** default password */
  password?: string
  /** serve HTTPS with this key pair (PEM) */
  tls?: { key: string | Buffer; cert: string | Buffer }
  /** SRs of the pool (default 1: "Local storage"); the others are "Sim SR <n>" */
  srs?: number
  /** networks of the pool (default 1); the others are "Sim network <n>" on VLAN <n> */
  networks?: number
  /** an NBD server on the host (nbd-server.ts); the first network gets the NBD purpose given */
  nbd?: SimNbdOptions
}

export interface XapiSimulator {
  /** `http://127.0.0.1:PORT` (or https) */
  readonly url: string
  readonly user: string
  readonly password: string
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
  /** stops listening, ends pending long-polls and exports, closes connections */
  close: () => Promise<void>
}

function validate(o: XapiSimulatorOptions): void {
  const bad = (what: string): never => {
    throw new UsageError(`xapi-sim: ${what}`)
  }
  if (!Number.isSafeInteger(o.vms) || o.vms < 0 || o.vms > 10_000) bad(`vms must be a whole number from 0 to 10000, got ${o.vms}`)
  if (!Number.isSafeInteger(o.disksPerVm) || o.disksPerVm < 0 || o.disksPerVm > 16) bad(`disksPerVm must be a whole number from 0 to 16, got ${o.disksPerVm}`)
  if (!Number.isSafeInteger(o.diskSizeBytes) || o.diskSizeBytes <= 0 || o.diskSizeBytes % VHD_BLOCK_BYTES !== 0 || o.diskSizeBytes > 2040 * 1024 ** 4) {
    bad(`diskSizeBytes must be a positive multiple of 2 MiB up to 2040 GiB, got ${o.diskSizeBytes}`)
  }
  if (!(o.fillRatio >= 0 && o.fillRatio <= 1)) bad(`fillRatio must be between 0 and 1, got ${o.fillRatio}`)
  if (!Number.isSafeInteger(o.seed)) bad(`seed must be a whole number, got ${o.seed}`)
  for (const f of ['srs', 'networks'] as const) {
    const n = o[f]
    if (n !== undefined && (!Number.isSafeInteger(n) || n < 1 || n > 64)) bad(`${f} must be a whole number from 1 to 64, got ${n}`)
  }
  if (o.port !== undefined && (!Number.isSafeInteger(o.port) || o.port < 0 || o.port > 65535)) bad(`port must be 0..65535, got ${o.port}`)
}

async function readJson(req: IncomingMessage, limitBytes = 1024 * 1024): Promise<unknown> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > limitBytes) throw new RangeError('request body too large')
    chunks.push(chunk)
  }
  const text = Buffer.concat(chunks).toString('utf8')
  return text === '' ? {} : (JSON.parse(text) as unknown)
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) })
  res.end(text)
}

export async function startXapiSimulator(options: XapiSimulatorOptions): Promise<XapiSimulator> {
  validate(options)
  const host = options.host ?? '127.0.0.1'
  const user = options.user ?? 'root'
  const password = options.password ?? 'password'
  const pool = new SimPool({ ...options, hostAddress: host })
  const tasks = new SimTasks(pool)
  const rpc = new SimRpc(pool, tasks, { user, password })
  for (let i = 1; i < (options.srs ?? 1); i++) rpc.vmOps.addSr(`Sim SR ${i}`)
  for (let i = 1; i < (options.networks ?? 1); i++) rpc.vmOps.addNetwork(`Sim network ${i}`, `xenbr${i}`, i)
  const faults = new FaultSet()
  const patterns = new PatternPool(options.seed)
  const closing = new AbortController()
  const exportCtx = { pool, rpc, tasks, faults, patterns, closing: closing.signal }
  const cbt = new SimCbt(pool, rpc)
  const nbd = await installNbd(pool, rpc, patterns, host, options.nbd)

  const vmRefByUuid = (uuid: string): string => pool.store.refByUuid('VM', uuid)
  const restoredDumps: Buffer[] = []
  const api = {
    poolDump: () => poolDump(exportCtx),
    restoredPoolDumps: () => [...restoredDumps],
    listVms: () => pool.listVms(),
    writeBlocks: (vmUuid: string, amount: { blocks?: number; ratio?: number }) => pool.writeBlocks(vmRefByUuid(vmUuid), amount),
    setFault: (fault: SimFault) => {
      const f = parseSimFault(fault)
      if (f.kind === 'expire-session') rpc.expireSessions()
      else faults.add(f)
    },
    clearFaults: () => faults.clear(),
    setNbdFault: (fault: SimNbdFault) => nbd.setFault(fault),
    clearNbdFaults: () => nbd.clearFaults(),
    setCbtBadBitmapLength: (count: number) => {
      cbt.badBitmapLength = count
    },
    resetCbtChain: (vdiUuid: string) => cbt.resetChain(pool.store.refByUuid('VDI', vdiUuid)),
    setSrCapacity: (srUuid: string, capacityBytes: number) => {
      if (!Number.isSafeInteger(capacityBytes) || capacityBytes < 0) throw new UsageError(`xapi-sim: capacityBytes must be a whole number >= 0, got ${capacityBytes}`)
      pool.store.update('SR', pool.store.refByUuid('SR', srUuid), (r) => (r.physical_size = capacityBytes))
    },
    setGuestBoot: (mode: GuestBoot) => {
      rpc.vmOps.guestBoot = mode
    },
    setGuestScript: (answer: GuestScript) => {
      rpc.vmOps.guestScript = answer
    },
    reportGuestTools: (vmUuid: string) => rpc.vmOps.reportGuestTools(vmRefByUuid(vmUuid)),
    rawDiskContent: (vdiUuid: string): Readable => {
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
    },
  }

  const adminAuthorized = (req: IncomingMessage): boolean => {
    const h = req.headers.authorization ?? ''
    return h === `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
  }

  async function handleRpc(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let id: unknown = null
    try {
      const body = (await readJson(req)) as { id?: unknown; method?: unknown; params?: unknown; jsonrpc?: unknown }
      id = body.id ?? null
      if (typeof body.method !== 'string') throw new XapiFailure('MESSAGE_METHOD_UNKNOWN', [String(body.method)])
      const params = Array.isArray(body.params) ? (body.params as unknown[]) : []
      const controller = new AbortController()
      const onClose = (): void => controller.abort()
      res.on('close', onClose)
      const signal = AbortSignal.any([controller.signal, closing.signal])
      const result: XapiValue = await rpc.call(body.method, params, signal)
      res.off('close', onClose)
      sendJson(res, 200, { jsonrpc: '2.0', result, id })
    } catch (error) {
      const f = error instanceof XapiFailure ? error : new XapiFailure('INTERNAL_ERROR', [error instanceof Error ? error.message : String(error)])
      if (!res.destroyed) sendJson(res, 200, { jsonrpc: '2.0', error: { code: 1, message: f.xapiCode, data: f.params }, id })
    }
  }

  async function handleAdmin(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    if (!adminAuthorized(req)) {
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="xapi-sim"', 'Content-Type': 'application/json' })
      res.end(JSON.stringify({ error: 'admin endpoints need HTTP basic auth with the simulator credentials' }))
      return
    }
    try {
      let m: RegExpExecArray | null
      if (req.method === 'GET' && url.pathname === '/sim/vms') return sendJson(res, 200, api.listVms())
      if (req.method === 'POST' && (m = /^\/sim\/vms\/([^/]+)\/write$/.exec(url.pathname)) !== null) {
        const body = (await readJson(req)) as { blocks?: unknown; ratio?: unknown }
        const amount: { blocks?: number; ratio?: number } = {}
        if (typeof body.blocks === 'number') amount.blocks = body.blocks
        else if (typeof body.ratio === 'number') amount.ratio = body.ratio
        else return sendJson(res, 400, { error: 'body must be {"blocks": <count>} or {"ratio": <0..1>}' })
        return sendJson(res, 200, api.writeBlocks(decodeURIComponent(m[1] ?? ''), amount))
      }
      if (req.method === 'POST' && url.pathname === '/sim/faults') {
        api.setFault(parseSimFault(await readJson(req)))
        return sendJson(res, 200, { ok: true })
      }
      if (req.method === 'DELETE' && url.pathname === '/sim/faults') {
        api.clearFaults()
        return sendJson(res, 200, { ok: true })
      }
      if (req.method === 'GET' && (m = /^\/sim\/vdis\/([^/]+)\/raw$/.exec(url.pathname)) !== null) {
        const stream = api.rawDiskContent(decodeURIComponent(m[1] ?? ''))
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

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://sim')
    let p: Promise<void>
    if (req.method === 'POST' && url.pathname === '/jsonrpc') p = handleRpc(req, res)
    else if (req.method === 'GET' && (url.pathname === '/export_raw_vdi' || url.pathname === '/export_raw_vdi/')) p = handleExport(exportCtx, req, res, url)
    else if (req.method === 'PUT' && (url.pathname === '/import_raw_vdi' || url.pathname === '/import_raw_vdi/')) p = handleImport(exportCtx, req, res, url)
    else if ((req.method === 'GET' || req.method === 'PUT') && url.pathname === '/pool/xmldbdump') p = handlePoolDump(exportCtx, req, res, url, restoredDumps)
    else if (req.method === 'GET' && (url.pathname === '/export' || url.pathname === '/export/')) p = handleXvaExport(exportCtx, req, res, url)
    else if (req.method === 'PUT' && (url.pathname === '/import' || url.pathname === '/import/')) p = handleXvaImport(exportCtx, req, res, url)
    else if (url.pathname.startsWith('/sim/')) p = handleAdmin(req, res, url)
    else {
      sendJson(res, 404, { error: `not found: ${req.method} ${url.pathname}` })
      return
    }
    p.catch((error: unknown) => {
      if (!res.headersSent) sendJson(res, 500, ['INTERNAL_ERROR', String(error)])
      else res.destroy()
    })
  }

  const server: Server = options.tls === undefined ? createHttpServer(onRequest) : createHttpsServer(options.tls, onRequest)
  server.keepAliveTimeout = 65_000
  const sockets = new Set<Socket>()
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  const urlHost = host.includes(':') ? `[${host}]` : host
  let closed: Promise<void> | undefined
  return {
    url: `${options.tls === undefined ? 'http' : 'https'}://${urlHost}:${port}`,
    user,
    password,
    ...api,
    close: () => {
      closed ??= new Promise<void>((resolve) => {
        closing.abort(new XapiFailure('INTERNAL_ERROR', ['simulator is shutting down']))
        void nbd.close()
        server.close(() => resolve())
        // long-polls answer on abort; give them a tick to flush, then drop every connection
        setImmediate(() => {
          for (const s of sockets) s.destroy()
        })
      })
      return closed
    },
  }
}

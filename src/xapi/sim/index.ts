/**
 * The XAPI simulator: an HTTP(S) server that the unmodified `xen-api` package drives like a real pool.
 *
 * - `POST /jsonrpc`: XAPI JSON-RPC (server.ts routes every request);
 * - `GET /export_raw_vdi/`: disk exports (see export.ts);
 * - `PUT /import_raw_vdi/?format=vhd`: disk imports into a VDI (`VDI.create`d), see import.ts;
 * - `GET /export/?ref|uuid&use_compression` and `PUT /import/?sr_id`: whole VMs as XVA (xva-export.ts,
 *   xva-import.ts);
 * - the controls (admin.ts): the handle's methods, and the same as an admin HTTP API under `/sim/`;
 * - extra SRs and networks (`srs`, `networks` options), SR capacity, guest boot behaviour (vm-ops.ts).
 *
 * Everything is deterministic from `seed`; disks are sparse and generated on the fly (disk-content.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { UsageError } from '../../common/errors.js'
import { handleAdmin, simControls, type SimControls } from './admin.js'
import { PatternPool } from './disk-content.js'
import { FaultSet } from './faults.js'
import { installNbd, type SimNbdOptions } from './nbd-wiring.js'
import { SimPool } from './pool.js'
import { SimRpc } from './rpc.js'
import { listen, simRequestHandler } from './server.js'
import { XapiFailure } from './store.js'
import { SimTasks } from './tasks.js'
import { SimCbt } from './cbt.js'
import { VHD_BLOCK_BYTES } from './vhd-encoder.js'


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

export interface XapiSimulator extends SimControls {
  /** `http://127.0.0.1:PORT` (or https) */
  readonly url: string
  readonly user: string
  readonly password: string
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

export async function startXapiSimulator(options: XapiSimulatorOptions): Promise<XapiSimulator> {
  validate(options)
  const host = options.host ?? '127.0.0.1'
  const credentials = { user: options.user ?? 'root', password: options.password ?? 'password' }
  const pool = new SimPool({ ...options, hostAddress: host })
  const tasks = new SimTasks(pool)
  const rpc = new SimRpc(pool, tasks, credentials)
  for (let i = 1; i < (options.srs ?? 1); i++) rpc.vmOps.addSr(`Sim SR ${i}`)
  for (let i = 1; i < (options.networks ?? 1); i++) rpc.vmOps.addNetwork(`Sim network ${i}`, `xenbr${i}`, i)
  const patterns = new PatternPool(options.seed)
  const closing = new AbortController()
  const ctx = { pool, rpc, tasks, faults: new FaultSet(), patterns, closing: closing.signal }
  const cbt = new SimCbt(pool, rpc)
  const nbd = await installNbd(pool, rpc, patterns, host, options.nbd)
  const restoredDumps: Buffer[] = []
  const controls = simControls({ ...ctx, cbt, nbd, restoredDumps })
  const admin = (req: IncomingMessage, res: ServerResponse, url: URL) => handleAdmin(controls, credentials, req, res, url)
  const { server, sockets, port } = await listen(simRequestHandler({ ctx, restoredDumps, admin }), { host, port: options.port ?? 0, tls: options.tls })
  const urlHost = host.includes(':') ? `[${host}]` : host
  let closed: Promise<void> | undefined
  return {
    url: `${options.tls === undefined ? 'http' : 'https'}://${urlHost}:${port}`,
    ...credentials,
    ...controls,
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

/**
 * Wires NBD into the simulator: the NBD server (nbd-server.ts) when the `nbd` option is given, the
 * network purpose (`network.purpose`, `network.add_purpose` / `remove_purpose`, the first network gets
 * the option's purpose) and `VDI.get_nbd_info` (an empty list when no network has an NBD purpose, as
 * XAPI answers).
 */
import type { PatternPool } from './disk-content.js'
import { SimNbdServer, type SimNbdFault } from './nbd-server.js'
import type { SimPool } from './pool.js'
import type { SimRpc } from './rpc.js'
import { XapiFailure } from './store.js'

export type { SimNbdFault } from './nbd-server.js'

export interface SimNbdOptions {
  /** host key pair (PEM) for TLS; without it the purpose defaults to `insecure_nbd` */
  tls?: { key: string | Buffer; cert: string | Buffer }
  /** purpose given to the pool's first network (default `nbd` with tls, else `insecure_nbd`; `none`: no NBD network) */
  purpose?: 'nbd' | 'insecure_nbd' | 'none'
}

export interface SimNbdHandle {
  setFault(fault: SimNbdFault): void
  clearFaults(): void
  close(): Promise<void>
}

const PURPOSES = new Set(['nbd', 'insecure_nbd'])

export async function installNbd(pool: SimPool, rpc: SimRpc, patterns: PatternPool, host: string, options: SimNbdOptions | undefined): Promise<SimNbdHandle> {
  const server = options === undefined ? undefined : new SimNbdServer(pool, rpc, patterns, options.tls === undefined ? {} : { tls: options.tls })
  await server?.listen(host)
  const str = (args: unknown[], i: number): string => {
    const v = args[i]
    if (typeof v !== 'string') throw new XapiFailure('MESSAGE_PARAMETER_COUNT_MISMATCH', ['network', String(i + 1), String(args.length)])
    return v
  }
  const setPurpose = (networkRef: string, purpose: string, add: boolean): void => {
    if (!PURPOSES.has(purpose)) throw new XapiFailure('INVALID_VALUE', ['purpose', purpose])
    pool.store.update('network', networkRef, (r) => {
      const list = ((r.purpose as string[] | undefined) ?? []).filter((p) => p !== purpose)
      r.purpose = add ? [...list, purpose] : list
    })
  }
  rpc.extensions.set('network.add_purpose', { fn: (a) => (setPurpose(str(a, 0), str(a, 1), true), ''), async: true })
  rpc.extensions.set('network.remove_purpose', { fn: (a) => (setPurpose(str(a, 0), str(a, 1), false), ''), async: true })
  rpc.extensions.set('VDI.get_nbd_info', { fn: (a, session) => (server === undefined ? (pool.store.get('VDI', str(a, 0)), []) : server.nbdInfo(str(a, 0), session)), async: false })
  const purpose = options?.purpose ?? (options?.tls === undefined ? 'insecure_nbd' : 'nbd')
  if (options !== undefined && purpose !== 'none') setPurpose(pool.networkRef, purpose, true)
  return {
    setFault: (f) => {
      if (server === undefined) throw new XapiFailure('INTERNAL_ERROR', ['the simulator was started without its NBD server (option nbd)'])
      server.setFault(f)
    },
    clearFaults: () => server?.clearFaults(),
    close: () => server?.close() ?? Promise.resolve(),
  }
}

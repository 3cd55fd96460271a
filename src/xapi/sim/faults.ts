/**
 * Fault injection for the simulator's exports (and, with `on: 'import'`, its VHD imports). A fault
 * applies to every matching transfer (optionally only to one VDI, optionally only `times` times) until
 * cleared; imports honour `http-error` (answered before reading the body) and `stall` (the body is no
 * longer read after `afterBytes`, until the task is cancelled; an XVA import takes a `stall` without vdiUuid):
 * - `reset`: the TCP connection is reset after `afterBytes` bytes of the body;
 * - `stall`: the body stops after `afterBytes` bytes and the connection stays open;
 * - `slow`: the body is paced at `bytesPerSecond`;
 * - `http-error`: the export answers `status` (default 500) with XAPI error `xapiCode` (default INTERNAL_ERROR);
 * - `corrupt`: the byte at `offset` of the body is inverted (for validator tests);
 * - `expire-session`: applied at once, every open session becomes invalid (SESSION_INVALID).
 */
import { z } from 'zod'

const common = { vdiUuid: z.string().optional(), times: z.number().int().positive().optional(), on: z.enum(['export', 'import']).optional() }

const simFaultSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('reset'), afterBytes: z.number().int().nonnegative(), ...common }).strict(),
  z.object({ kind: z.literal('stall'), afterBytes: z.number().int().nonnegative(), ...common }).strict(),
  z.object({ kind: z.literal('slow'), bytesPerSecond: z.number().int().positive(), ...common }).strict(),
  z.object({ kind: z.literal('http-error'), status: z.number().int().min(400).max(599).optional(), xapiCode: z.string().regex(/^[A-Z_]+$/).optional(), ...common }).strict(),
  z.object({ kind: z.literal('corrupt'), offset: z.number().int().nonnegative(), ...common }).strict(),
  z.object({ kind: z.literal('expire-session') }).strict(),
])

export type SimFault = z.infer<typeof simFaultSchema>
export type ExportFault = Exclude<SimFault, { kind: 'expire-session' }>

/** Parses a fault from untrusted JSON; the message names the bad field. */
export function parseSimFault(input: unknown): SimFault {
  const r = simFaultSchema.safeParse(input)
  if (!r.success) {
    throw new RangeError(`invalid simulator fault: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`)
  }
  return r.data
}

export class FaultSet {
  private faults: { fault: ExportFault; remaining: number }[] = []

  add(fault: ExportFault): void {
    this.faults.push({ fault, remaining: fault.times ?? Number.POSITIVE_INFINITY })
  }

  clear(): void {
    this.faults = []
  }

  /** The faults that apply to this export (or import: `on` defaults to export), consuming one use of each. */
  /** Faults for a transfer of a VDI known by any of `vdiUuids` (a snapshot's VDI also answers to its disk's uuid). */
  take(vdiUuids: string | readonly string[], on: 'export' | 'import' = 'export'): ExportFault[] {
    const uuids = typeof vdiUuids === 'string' ? [vdiUuids] : vdiUuids
    const out: ExportFault[] = []
    for (const f of this.faults) {
      if (f.remaining > 0 && (f.fault.on ?? 'export') === on && (f.fault.vdiUuid === undefined || uuids.includes(f.fault.vdiUuid))) {
        f.remaining--
        out.push(f.fault)
      }
    }
    this.faults = this.faults.filter((f) => f.remaining > 0)
    return out
  }
}

/**
 * Changed Block Tracking in the simulator, as XAPI exposes it: `VDI.enable_cbt` / `VDI.disable_cbt`
 * (the `cbt_enabled` field), snapshots of a tracked disk tracked too, `VDI.list_changed_blocks(from, to)`
 * returning the base64 bitmap of 64 KiB blocks (one bit each, most significant bit first, the length
 * rounded up to whole bytes) that changed between two VDIs of one tracked chain, and `VDI.data_destroy`
 * turning a tracked snapshot into a `cbt_metadata` VDI: its data is gone (no export, no NBD), its
 * changed-block metadata stays, so it can still be the `from` of `list_changed_blocks`.
 *
 * The tracking log is modelled by the disk generations (disk-content.ts): a tracked VDI records the
 * generation map its chain had at each snapshot, and a "chain epoch" that `disable_cbt`, `enable_cbt`
 * after a disable, and `resetChain` (what a VDI migration does to CBT) renew; VDIs of different epochs
 * have no common log and `list_changed_blocks` fails as XAPI's storage does. The simulator writes whole
 * 2 MiB blocks, so a changed 2 MiB block sets its 32 bits.
 *
 * Fault: `badBitmapLength` makes the next `list_changed_blocks` answer a bitmap one byte short.
 */
import type { SimPool } from './pool.js'
import type { SimRpc } from './rpc.js'
import { NULL_REF, text, XapiFailure, type XapiValue } from './store.js'
import { VHD_BLOCK_BYTES } from './vhd-encoder.js'

const CBT_BLOCK_BYTES = 64 * 1024

export class SimCbt {
  /** VDI ref → chain epoch (tracked VDIs and cbt_metadata ones) */
  readonly #epoch = new Map<string, number>()
  /** VDI ref → block generations when it was made (kept after data_destroy: the "metadata") */
  readonly #generations = new Map<string, Map<number, number>>()
  #nextEpoch = 1
  badBitmapLength = 0

  constructor(
    private readonly pool: SimPool,
    rpc: SimRpc,
  ) {
    const ref = (args: unknown[], i: number): string => {
      const v = args[i]
      if (typeof v !== 'string') throw new XapiFailure('MESSAGE_PARAMETER_COUNT_MISMATCH', ['VDI', String(i + 1), String(args.length)])
      return v
    }
    const add = (name: string, fn: (args: unknown[]) => XapiValue): void => void rpc.extensions.set(name, { fn, async: true })
    add('VDI.enable_cbt', (a) => (this.enable(ref(a, 0)), ''))
    add('VDI.disable_cbt', (a) => (this.disable(ref(a, 0)), ''))
    add('VDI.list_changed_blocks', (a) => this.listChangedBlocks(ref(a, 0), ref(a, 1)))
    add('VDI.data_destroy', (a) => (this.dataDestroy(ref(a, 0)), ''))
    // snapshots of tracked disks are tracked: wrap VM.snapshot / VM.checkpoint
    for (const [name, checkpoint] of [['VM.snapshot', false], ['VM.checkpoint', true]] as const) {
      add(name, (a) => {
        const snap = pool.snapshot(ref(a, 0), ref(a, 1), !checkpoint && Array.isArray(a[2]) ? a[2].map(String) : [], checkpoint)
        for (const vdiRef of pool.vmDisks(snap)) this.#afterSnapshot(vdiRef)
        return snap
      })
    }
  }

  enable(vdiRef: string): void {
    const vdi = this.pool.store.get('VDI', vdiRef)
    if (vdi.is_a_snapshot === true) throw new XapiFailure('OPERATION_NOT_ALLOWED', ['VDI is a snapshot'])
    if (vdi.cbt_enabled === true) return
    this.#epoch.set(vdiRef, this.#nextEpoch++)
    this.pool.store.update('VDI', vdiRef, (r) => (r.cbt_enabled = true))
  }

  disable(vdiRef: string): void {
    const vdi = this.pool.store.get('VDI', vdiRef)
    if (vdi.is_a_snapshot === true) throw new XapiFailure('OPERATION_NOT_ALLOWED', ['VDI is a snapshot'])
    this.#epoch.delete(vdiRef)
    this.pool.store.update('VDI', vdiRef, (r) => (r.cbt_enabled = false))
  }

  /** What a migration does: the VDI stays tracked, with a new log that has nothing in common with the old one. */
  resetChain(vdiRef: string): void {
    if (this.pool.store.get('VDI', vdiRef).cbt_enabled !== true) return
    this.#epoch.set(vdiRef, this.#nextEpoch++)
  }

  #afterSnapshot(snapVdiRef: string): void {
    const source = text(this.pool.store.get('VDI', snapVdiRef).snapshot_of)
    const epoch = this.#epoch.get(source)
    if (epoch === undefined || source === NULL_REF) return
    this.#epoch.set(snapVdiRef, epoch)
    this.#generations.set(snapVdiRef, new Map(this.pool.disks.get(snapVdiRef)?.generations))
    this.pool.store.update('VDI', snapVdiRef, (r) => (r.cbt_enabled = true))
  }

  listChangedBlocks(fromRef: string, toRef: string): string {
    const s = this.pool.store
    const from = s.get('VDI', fromRef)
    const to = s.get('VDI', toRef)
    for (const [ref, r] of [[fromRef, from], [toRef, to]] as const) {
      if (r.cbt_enabled !== true && r.type !== 'cbt_metadata') throw new XapiFailure('VDI_NO_CBT_METADATA', [ref])
    }
    const epoch = this.#epoch.get(fromRef)
    if (epoch === undefined || epoch !== this.#epoch.get(toRef)) {
      throw new XapiFailure('SR_BACKEND_FAILURE_460', ['', 'Failed to calculate changed blocks for given VDIs. [opterr=Source and target VDI are unrelated]', ''])
    }
    const fromGen = this.#generations.get(fromRef) ?? new Map<number, number>()
    const toGen = this.#generations.get(toRef) ?? this.pool.disks.get(toRef)?.generations ?? new Map<number, number>()
    const size = Number(to.virtual_size)
    const bitmap = Buffer.alloc(Math.ceil(size / CBT_BLOCK_BYTES / 8))
    const perBlock = VHD_BLOCK_BYTES / CBT_BLOCK_BYTES
    const mark = (b: number): void => {
      for (let i = b * perBlock; i < Math.min((b + 1) * perBlock, Math.ceil(size / CBT_BLOCK_BYTES)); i++) bitmap[i >> 3]! |= 0x80 >> (i & 7)
    }
    for (const [b, g] of toGen) if (fromGen.get(b) !== g) mark(b)
    for (const b of fromGen.keys()) if (!toGen.has(b)) mark(b)
    if (this.badBitmapLength > 0) {
      this.badBitmapLength--
      return bitmap.subarray(0, bitmap.length - 1).toString('base64')
    }
    return bitmap.toString('base64')
  }

  dataDestroy(vdiRef: string): void {
    const s = this.pool.store
    const vdi = s.get('VDI', vdiRef)
    if (vdi.type === 'cbt_metadata') return // idempotent, as XAPI
    if (vdi.cbt_enabled !== true) throw new XapiFailure('VDI_NO_CBT_METADATA', [vdiRef])
    if (vdi.is_a_snapshot !== true) throw new XapiFailure('OPERATION_NOT_ALLOWED', ['VDI is not a snapshot'])
    if ((vdi.VBDs as string[]).length > 0) throw new XapiFailure('VDI_IN_USE', [vdiRef, 'data_destroy'])
    this.pool.disks.delete(vdiRef)
    s.update('VDI', vdiRef, (r) => {
      r.type = 'cbt_metadata'
      r.physical_size = 0
    })
  }
}

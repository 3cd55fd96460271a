/**
 * The NBD and CBT calls of the backup engine's XAPI port (nbd-plan.ts NbdXapi) over the XapiClient:
 * `VDI.get_nbd_info`, `VDI.list_changed_blocks`, `VDI.enable_cbt`, `VDI.data_destroy`, `VM.destroy`
 * alone (the VDIs stay: XO's way before purging a snapshot's data) and the `cbt_metadata` VDIs.
 */
import type { XapiClient } from '../xapi/client.js'
import type { NbdServerInfo } from '../xapi/nbd/client.js'
import type { NbdXapi } from './nbd-plan.js'
import type { Rec } from './ports.js'

function serverInfo(r: unknown): NbdServerInfo {
  const o = (typeof r === 'object' && r !== null ? r : {}) as Record<string, unknown>
  const str = (v: unknown): string => (typeof v === 'string' ? v : '')
  return {
    address: str(o.address),
    port: typeof o.port === 'number' ? o.port : Number(str(o.port) || 10809),
    exportname: str(o.exportname),
    cert: str(o.cert),
    ...(typeof o.subject === 'string' ? { subject: o.subject } : {}),
  }
}

export function nbdXapi(client: XapiClient): NbdXapi {
  return {
    async nbdInfo(vdiRef) {
      const list = await client.call('VDI.get_nbd_info', vdiRef)
      return Array.isArray(list) ? list.map(serverInfo) : []
    },
    async listChangedBlocks(baseRef, vdiRef) {
      return String(await client.call('VDI.list_changed_blocks', baseRef, vdiRef))
    },
    async enableCbt(vdiRef) {
      await client.call('VDI.enable_cbt', vdiRef)
    },
    async dataDestroy(vdiRef) {
      await client.call('VDI.data_destroy', vdiRef)
    },
    async destroyVmRecord(vmRef) {
      await client.call('VM.destroy', vmRef)
    },
    async destroyVdi(vdiRef) {
      await client.call('VDI.destroy', vdiRef)
    },
    async listCbtMetadataVdis() {
      const all = (await client.call('VDI.get_all_records')) as Record<string, Rec & { uuid: string }>
      return Object.entries(all)
        .filter(([, r]) => r.type === 'cbt_metadata')
        .map(([ref, r]) => ({ ref, uuid: r.uuid, record: r }))
    },
  }
}

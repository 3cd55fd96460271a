/**
 * The backup engine's XAPI port (ports.ts BackupXapi) over the project's XapiClient (src/xapi).
 * Records are handed on as plain JSON (they go verbatim into XO's metadata).
 */
import type { JsonValue } from '../common/errors.js'
import type { XapiClient } from '../xapi/client.js'
import type { BackupXapi, Rec, XapiDisk, XapiObject } from './ports.js'
import { TAG_COPY_OF, tagOf } from './backup-keys.js'
import { xoVmObject } from './smart-mode.js'
import { nbdXapi } from './nbd-xapi.js'

function obj(record: { $ref: string; uuid: string }): XapiObject {
  const { $ref, ...rest } = record as { $ref: string; uuid: string } & Rec
  return { ref: $ref, uuid: record.uuid, record: rest }
}

/** A VIF with XO's `$network$uuid`, `$network$name_label`, `$network$VLAN` (how a restore finds its network). */
function withNetwork<T extends { network: string }>(client: XapiClient, vif: T): T {
  try {
    const network = client.get('network', vif.network)
    const pif = network.PIFs[0] === undefined ? undefined : client.get('PIF', network.PIFs[0])
    return { ...vif, $network$uuid: network.uuid, $network$name_label: network.name_label, ...(pif === undefined ? {} : { $network$VLAN: pif.VLAN }) }
  } catch {
    return vif // the network is gone: a restore falls back to name/VLAN, then the pool default
  }
}

export function backupXapi(client: XapiClient): BackupXapi {
  return {
    listVmObjects() {
      const poolUuid = client.poolUuid
      return Promise.resolve(client.listVms().map((vm) => xoVmObject(vm as unknown as Rec, poolUuid)))
    },
    getVm(vmUuid) {
      const vm = client.get('VM', vmUuid)
      return Promise.resolve(obj(vm))
    },
    listSnapshots(vmRef) {
      return Promise.resolve(client.listVms({ includeSnapshots: true }).filter((s) => s.is_a_snapshot && s.snapshot_of === vmRef).map(obj))
    },
    async snapshot(vmRef, nameLabel, options) {
      return obj(await client.snapshotVm(vmRef, nameLabel, { checkpoint: options.checkpoint }))
    },
    async setNameLabel(vmRef, nameLabel) {
      await client.call('VM.set_name_label', vmRef, nameLabel)
    },
    async setOtherConfig(cls, ref, key, value) {
      await client.setOtherConfig(cls, ref, { [key]: value })
    },
    async setOtherConfigEntries(cls, ref, entries) {
      await client.setOtherConfig(cls, ref, entries)
    },
    async getRecord(cls, ref) {
      const record = (await client.call(`${cls}.get_record`, ref)) as { uuid: string } & Rec
      return { ref, uuid: record.uuid, record }
    },
    async vtpmContents(vmRef) {
      const refs = (await client.call('VM.get_VTPMs', vmRef)) as string[]
      const out: string[] = []
      for (const ref of refs) out.push(String(await client.call('VTPM.get_contents', ref)))
      return out
    },
    listDisks(vmRef) {
      const disks: XapiDisk[] = client.vmDisks(vmRef).map(({ vbd, vdi }) => {
        let sourceVdiUuid = vdi.uuid
        if (vdi.is_a_snapshot && vdi.snapshot_of !== 'OpaqueRef:NULL') {
          try {
            sourceVdiUuid = client.get('VDI', vdi.snapshot_of).uuid
          } catch {
            // the source disk was deleted since: XO keeps the chain under the snapshot's own uuid then
            sourceVdiUuid = tagOf(vdi, TAG_COPY_OF) ?? vdi.uuid
          }
        }
        return { vbd: obj(vbd), vdi: obj(vdi), sourceVdiUuid }
      })
      return Promise.resolve(disks)
    },
    listVifs(vmRef) {
      const vm = client.get('VM', vmRef)
      return Promise.resolve(vm.VIFs.map((ref) => obj(withNetwork(client, client.get('VIF', ref)))))
    },
    async destroySnapshot(ref) {
      await client.destroySnapshot(ref)
    },
    nbd: nbdXapi(client),
    xvaExportDescriptor(vmRef, useCompression) {
      return client.vmExportDescriptor(vmRef, useCompression)
    },
    async exportDescriptor(vdiRef, options) {
      const d = await client.exportDescriptor(vdiRef, { format: 'vhd', ...(options.baseRef === undefined ? {} : { baseRef: options.baseRef }) })
      return d as unknown as JsonValue
    },
  }
}

/**
 * The whole-VM restore plan (restore-vm-plan.ts) on hand-written metadata: XO's network matching
 * (`$network$uuid`, then name on the same VLAN, then the first of that VLAN, then the pool default), CD
 * drives recreated empty, disks in VBD order, and the VM record XO creates (start blocked while
 * importing, backup keys and mac_seed removed, tags kept).
 */
import { describe, expect, it } from 'vitest'
import type { BackupMetadata } from '../../src/backup/layout.js'
import { matchNetwork, planVmRestore, type PoolNetwork } from '../../src/backup/restore-vm-plan.js'

const VM = '11111111-1111-4111-8111-111111111111'
const networks: PoolNetwork[] = [
  { $ref: 'OpaqueRef:a', uuid: 'net-a', name_label: 'LAN', vlan: -1 },
  { $ref: 'OpaqueRef:b', uuid: 'net-b', name_label: 'DMZ', vlan: 20 },
  { $ref: 'OpaqueRef:c', uuid: 'net-c', name_label: 'Storage', vlan: 20 },
  { $ref: 'OpaqueRef:d', uuid: 'net-d', name_label: 'internal', vlan: undefined },
  { $ref: 'OpaqueRef:e', uuid: 'net-e', name_label: 'Backup', vlan: 30 },
]

describe('matchNetwork (XO importIncrementalVm rule)', () => {
  it('uuid first, then name on the VLAN, then the VLAN first network, then the pool default (last with a PIF)', () => {
    expect(matchNetwork({ $network$uuid: 'net-c', $network$name_label: 'LAN', $network$VLAN: -1 }, networks)?.uuid).toBe('net-c')
    expect(matchNetwork({ $network$uuid: 'gone', $network$name_label: 'Storage', $network$VLAN: 20 }, networks)?.uuid).toBe('net-c')
    expect(matchNetwork({ $network$uuid: 'gone', $network$name_label: 'other', $network$VLAN: 20 }, networks)?.uuid).toBe('net-b')
    expect(matchNetwork({ $network$name_label: 'LAN' }, networks)?.uuid).toBe('net-a')
    expect(matchNetwork({ $network$uuid: 'gone', $network$VLAN: 99 }, networks)?.uuid).toBe('net-e')
    // a network without PIF is only chosen by uuid
    expect(matchNetwork({ $network$uuid: 'net-d' }, networks)?.uuid).toBe('net-d')
    expect(matchNetwork({ $network$VLAN: 99 }, [networks[3]!])).toBeUndefined()
  })
})

describe('planVmRestore', () => {
  const metadata = {
    version: '2.0.0',
    mode: 'delta',
    jobId: 'j',
    scheduleId: 's',
    timestamp: Date.UTC(2026, 10, 25, 22, 30, 0),
    vm: {
      uuid: VM, name_label: 'web', name_description: 'front', VCPUs_max: 4, VCPUs_at_startup: 2, memory_static_max: 2 ** 31, HVM_boot_policy: 'BIOS order',
      platform: { viridian: 'true' }, tags: ['prod'], blocked_operations: { destroy: 'protected' },
      other_config: { 'xo:backup:job': 'j', 'xo:backup:vm': VM, mac_seed: 'x', owner: 'me' }, affinity: 'OpaqueRef:host', is_a_template: false,
    },
    vmSnapshot: {},
    vbds: {
      v1: { VDI: 'OpaqueRef:d1', userdevice: '1', type: 'Disk', bootable: false, mode: 'RW' },
      v0: { VDI: 'OpaqueRef:d0', userdevice: '0', type: 'Disk', bootable: true, mode: 'RW' },
      cd: { VDI: 'OpaqueRef:iso', userdevice: '3', type: 'CD', mode: 'RO' },
    },
    vdis: {
      'OpaqueRef:d0': { name_label: 'root', other_config: { 'xo:copy_of': 'x', keep: 'y' } },
      'OpaqueRef:d1': { name_label: 'data', other_config: {} },
    },
    vifs: {},
    vhds: { 'OpaqueRef:d1': 'vdis/j/bbbb/20261125T223000Z.vhd', 'OpaqueRef:d0': 'vdis/j/aaaa/20261125T223000Z.vhd' },
    isVhdDifferencing: {},
    size: 0,
  } as unknown as BackupMetadata

  it('builds the VM record as XO creates it, disks in VBD order, CD drives empty', () => {
    const plan = planVmRestore(metadata, VM)
    expect(plan.vmRecord).toMatchObject({
      name_label: '[Importing…] web',
      VCPUs_max: 4,
      platform: { viridian: 'true' },
      affinity: 'OpaqueRef:NULL',
      is_a_template: false,
      tags: ['prod'],
      other_config: { owner: 'me' },
      blocked_operations: { destroy: 'protected', start: 'Importing…', start_on: 'Importing…' },
    })
    expect(plan.finalName).toBe('web (20261125T223000Z)')
    expect(plan.blockedOperations).toEqual({ destroy: 'protected' })
    expect(plan.disks.map((d) => [d.nameLabel, d.vbds.map((v) => v.userdevice)])).toEqual([['root', ['0']], ['data', ['1']]])
    expect(plan.disks[0]!.record.other_config).toEqual({ keep: 'y' })
    expect(plan.emptyVbds).toEqual([expect.objectContaining({ type: 'CD', userdevice: '3', empty: true, mode: 'RO' })])
    expect(planVmRestore(metadata, VM, { additionalVmTag: 'restored-by-test', nameLabel: 'x' })).toMatchObject({ finalName: 'x', tags: ['prod', 'restored-by-test'] })
  })
})

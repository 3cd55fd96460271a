/**
 * `remote.test` and `remote.list` through the real queue: EnqueueClient → Redis → ProxyRuntime with the
 * builtin (engine) processors → a local remote in a temp dir. Checks the result shapes (probe figures,
 * backups listed from metadata files, directory entries) and that an unreachable remote ends the job
 * in failure carrying the remote's POSIX code.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { metadataPath } from '../../src/backup/layout.js'
import type { EnqueueClient } from '../../src/queue/client.js'
import { builtinProcessors } from '../../src/workers/builtin-processors.js'
import type { ProxyRuntime } from '../../src/workers/proxy.js'
import { makeTempDir } from '../helpers/tmp.js'
import { client as makeClient, startProxy, testConfig, uid, VM1, VM2 } from '../workers/fixtures.js'

const redisUrl = inject('redisUrl')
const config = testConfig(redisUrl, { proxy: { id: uid('rt') }, workers: { attempts: 1 } })
let proxy: ProxyRuntime
let client: EnqueueClient
let dir: { path: string; remove: () => Promise<void> }

function metadata(ts: number, mode: 'delta' | 'full'): string {
  return JSON.stringify({
    version: '2.0.0',
    mode,
    jobId: 'job1',
    scheduleId: 'sched1',
    timestamp: ts,
    vm: { name_label: 'vm one' },
    vmSnapshot: {},
    vbds: {},
    vdis: { 'OpaqueRef:a': { $snapshot_of$uuid: VM2 } },
    vhds: { 'OpaqueRef:a': `vdis/job1/${VM2}/20261125T100000Z.vhd` },
    isVhdDifferencing: { 'OpaqueRef:a': mode === 'delta' },
    size: 1234,
  })
}

beforeAll(async () => {
  dir = await makeTempDir('bp-remote-tasks-')
  client = makeClient(config)
  proxy = await startProxy(config, builtinProcessors({ standIns: false }))
})
afterAll(async () => {
  await client?.close()
  await proxy?.shutdown({ force: true })
  await dir?.remove()
})

describe('remote.* tasks through the queue (real processors, local remote)', () => {
  it('remote.test: probe figures of a reachable remote, nothing left behind', async () => {
    const root = join(dir.path, 'probe')
    await mkdir(root)
    const s = await (await client.enqueue({ proxy: config.proxy.id }, { kind: 'remote.test', remoteId: 'local', remote: { url: `file://${root}` } })).result()
    expect(s.status, JSON.stringify(s)).toBe('success')
    const r = s.result as Record<string, number>
    expect(r.sizeBytes).toBe(16 * 1024 * 1024)
    for (const k of ['writeDurationMs', 'readDurationMs', 'writeMiBps', 'readMiBps', 'latencyMs']) expect(r[k], k).toBeGreaterThan(0)
    expect(await readdir(root)).toEqual([])
  })

  it('remote.test on an unreachable remote: failure with the POSIX code', async () => {
    const s = await (await client.enqueue({ proxy: config.proxy.id }, { kind: 'remote.test', remote: { url: `file://${dir.path}/does-not-exist` } })).result()
    expect(s.status).toBe('failure')
    expect(s.error?.code).toBe('ENOENT')
    expect(s.error?.message).toMatch(/does-not-exist|open/)
  })

  it('remote.list: backups by VM (all VMs, one VM) and the entries of a directory', async () => {
    const root = join(dir.path, 'list')
    await mkdir(join(root, 'xo-vm-backups', VM1), { recursive: true })
    await mkdir(join(root, 'xo-vm-backups', VM2), { recursive: true })
    const t1 = Date.UTC(2026, 10, 25, 10, 0, 0)
    const t2 = Date.UTC(2026, 10, 25, 11, 0, 0)
    await writeFile(join(root, metadataPath(VM1, '20261125T100000Z')), metadata(t1, 'full'))
    await writeFile(join(root, metadataPath(VM1, '20261125T110000Z')), metadata(t2, 'delta'))
    const remote = { url: `file://${root}` }

    const all = await (await client.enqueue({ proxy: config.proxy.id }, { kind: 'remote.list', remote })).result()
    expect(all.status, JSON.stringify(all)).toBe('success')
    const backups = (all.result as { backups: Record<string, { timestamp: string; mode: string; metadataPath: string; sizeBytes: number; vmName: string; disks: { vdiUuid: string; vhdPath: string; differencing: boolean }[] }[]> }).backups
    expect(Object.keys(backups).sort()).toEqual([VM1, VM2])
    expect(backups[VM2]).toEqual([])
    expect(backups[VM1]!.map((b) => [b.timestamp, b.mode, b.sizeBytes, b.vmName])).toEqual([
      ['20261125T100000Z', 'full', 1234, 'vm one'],
      ['20261125T110000Z', 'delta', 1234, 'vm one'],
    ])
    expect(backups[VM1]![1]!.metadataPath).toBe(metadataPath(VM1, '20261125T110000Z'))
    expect(backups[VM1]![1]!.disks).toEqual([{ vdiUuid: VM2, vhdPath: `xo-vm-backups/${VM1}/vdis/job1/${VM2}/20261125T100000Z.vhd`, differencing: true }])

    const one = await (await client.enqueue({ proxy: config.proxy.id }, { kind: 'remote.list', remote, vmUuid: VM2 })).result()
    expect(one.result).toEqual({ backups: { [VM2]: [] } })

    const entries = await (await client.enqueue({ proxy: config.proxy.id }, { kind: 'remote.list', remote, path: `xo-vm-backups/${VM1}` })).result()
    expect(entries.result).toEqual({
      path: `xo-vm-backups/${VM1}`,
      entries: expect.arrayContaining([
        { path: '20261125T100000Z.json', isDirectory: false },
        { path: '20261125T110000Z.json', isDirectory: false },
      ]) as unknown,
    })

    const missing = await (await client.enqueue({ proxy: config.proxy.id }, { kind: 'remote.list', remote, path: 'nope' })).result()
    expect(missing.status).toBe('failure')
    expect(missing.error?.code).toBe('ENOENT')
  })
})

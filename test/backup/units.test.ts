/** Pure parts of the backup engine: layout, task log, base choice, retention planning. */
import { describe, expect, it } from 'vitest'
import { formatTimestamp, metadataPath, parseMetadata, parseTimestamp, timestampOfName, vhdRelativePath, resolveVhdPath } from '../../src/backup/layout.js'
import { createTaskLog, type TaskLogEvent } from '../../src/backup/task-log.js'
import { chooseBase } from '../../src/backup/base-choice.js'
import { TAG_JOB, tagChainLength, tagDatetime, tagOf } from '../../src/backup/backup-keys.js'
import { planRetention, type RetentionBackup } from '../../src/backup/retention.js'
import { CancelledError } from '../../src/common/errors.js'

const VM = '0f8b1e76-3c4a-4d1e-9a55-3b2a1c0d9e8f'

describe('layout', () => {
  it('formats and parses XO timestamps', () => {
    const ms = Date.UTC(2026, 10, 25, 22, 30, 5)
    expect(formatTimestamp(ms)).toBe('20261125T223005Z')
    expect(parseTimestamp('20261125T223005Z')).toBe(ms)
    expect(() => parseTimestamp('2026-11-25')).toThrow(/YYYYMMDDTHHmmssZ/)
    expect(() => parseTimestamp('20261345T223005Z')).toThrow(/not a valid date/)
  })
  it('builds XO paths', () => {
    expect(metadataPath(VM, '20261125T223005Z')).toBe(`xo-vm-backups/${VM}/20261125T223005Z.json`)
    expect(vhdRelativePath('job', 'vdi', '20261125T223005Z', false)).toBe('vdis/job/vdi/20261125T223005Z.vhd')
    expect(vhdRelativePath('job', 'vdi', '20261125T223005Z', true)).toBe('vdis/job/vdi/20261125T223005Z.alias.vhd')
    expect(timestampOfName('x/20261125T223005Z.alias.vhd')).toBe('20261125T223005Z')
    expect(timestampOfName('cache.json.gz')).toBeUndefined()
    expect(() => resolveVhdPath(VM, '../../etc/passwd')).toThrow(/outside/)
  })
  it('refuses metadata it could not restore, naming the field', () => {
    expect(() => parseMetadata('m.json', '{"version":"3.0.0"}')).toThrow(/field "version"/)
    expect(() => parseMetadata('m.json', 'nope')).toThrow(/not JSON/)
    const ok = { version: '2.0.0', mode: 'delta', jobId: 'j', scheduleId: 's', timestamp: 1, vm: {}, vmSnapshot: {}, vbds: {}, vdis: {}, vhds: { r: 'vdis/j/v/x.vhd' } }
    expect(parseMetadata('m.json', JSON.stringify(ok)).vhds).toEqual({ r: 'vdis/j/v/x.vhd' })
    expect(() => parseMetadata('m.json', JSON.stringify({ ...ok, vhds: { r: 3 } }))).toThrow(/vhds\.r/)
  })
  it('reads older metadata versions and XO\'s XVA fulls, with neutral values for what they lack', () => {
    const old = { version: '1.0.0', mode: 'delta', jobId: 'j', scheduleId: 's', timestamp: 1, vm: {}, vmSnapshot: {}, vbds: {}, vdis: {}, vhds: { r: 'vdis/j/v/x.vhd' } }
    expect(parseMetadata('m.json', JSON.stringify(old))).toMatchObject({ version: '1.0.0', vifs: {}, isVhdDifferencing: {}, size: 0 })
    const xva = { version: '2.0.0', mode: 'full', jobId: 'j', scheduleId: 's', timestamp: 1, vm: {}, vmSnapshot: {}, xva: './20261125T223005Z.xva', size: 5 }
    expect(parseMetadata('m.json', JSON.stringify(xva))).toMatchObject({ xva: './20261125T223005Z.xva', vhds: {}, vdis: {}, vbds: {} })
    expect(() => parseMetadata('m.json', JSON.stringify({ ...xva, xva: undefined }))).toThrow(/field "vbds"/)
  })
})

describe('task log', () => {
  it('a run with a failed VM is a failure, and events stream in XO shape', async () => {
    const events: TaskLogEvent[] = []
    let t = 0
    const root = createTaskLog('backup', { mode: 'delta' }, (e) => events.push(e), () => ++t)
    await root.child('vm', { type: 'VM', id: 'a' }).run(() => Promise.resolve(1))
    await expect(root.child('vm', { type: 'VM', id: 'b' }).run(async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom')
    root.end()
    const s = root.summary()
    expect(s.status).toBe('failure')
    expect(s.tasks?.map((x) => x.status)).toEqual(['success', 'failure'])
    expect(s.tasks?.[1]?.result).toMatchObject({ message: 'boom' })
    expect(events[0]).toMatchObject({ event: 'start', message: 'backup', timestamp: 1 })
    expect(events.filter((e) => e.event === 'start' && e.parentId === root.id)).toHaveLength(2)
    expect(events.at(-1)).toMatchObject({ event: 'end', taskId: root.id, status: 'failure' })
  })
  it('a cancel is interrupted, a pending child ends interrupted, warnings are kept', async () => {
    const root = createTaskLog('backup', undefined)
    const vm = root.child('vm')
    vm.warning('target dropped', { id: 'r2' })
    vm.child('export')
    await expect(root.child('vm2').run(() => Promise.reject(new CancelledError()))).rejects.toThrow()
    vm.end()
    root.end()
    const s = root.summary()
    expect(s.tasks?.[0]?.status).toBe('interrupted')
    expect(s.tasks?.[0]?.warnings?.[0]?.message).toBe('target dropped')
    expect(s.status).toBe('interrupted')
  })
  it('a task whose function returned but whose child failed is a failure', async () => {
    const root = createTaskLog('backup', undefined)
    await root.run((task) => {
      task.child('x').end('failure')
      return Promise.resolve()
    })
    expect(root.status).toBe('failure')
  })
})

describe('base choice', () => {
  const snaps = [
    { uuid: 's1', ref: 'r1', datetime: '20260101T000000Z', deltaChainLength: 0 },
    { uuid: 's2', ref: 'r2', datetime: '20260102T000000Z', deltaChainLength: 1 },
  ]
  it('uses the newest snapshot exported to every target', () => {
    const c = chooseBase({ mode: 'delta', fullInterval: 0, snapshots: snaps, exportedByTarget: new Map([['a', new Set(['s1', 's2'])], ['b', new Set(['s1'])]]) })
    expect(c.base?.uuid).toBe('s1')
    expect(c.deltaChainLength).toBe(1)
  })
  it('falls back to a full when a target has none, in full mode, and at fullInterval', () => {
    expect(chooseBase({ mode: 'delta', fullInterval: 0, snapshots: snaps, exportedByTarget: new Map([['a', new Set(['s2'])], ['b', new Set<string>()]]) }).fullReason).toMatch(/b/)
    expect(chooseBase({ mode: 'full', fullInterval: 0, snapshots: snaps, exportedByTarget: new Map([['a', new Set(['s2'])]]) }).base).toBeUndefined()
    expect(chooseBase({ mode: 'delta', fullInterval: 3, snapshots: snaps, exportedByTarget: new Map([['a', new Set(['s2'])]]) }).base?.uuid).toBe('s2')
    expect(chooseBase({ mode: 'delta', fullInterval: 2, snapshots: snaps, exportedByTarget: new Map([['a', new Set(['s2'])]]) }).fullReason).toMatch(/fullInterval/)
  })
})

describe('backup keys', () => {
  it('reads an other_config entry only when it is a string', () => {
    expect(tagOf({ other_config: { [TAG_JOB]: 'j' } }, TAG_JOB)).toBe('j')
    expect(tagOf({ other_config: { [TAG_JOB]: 1 } }, TAG_JOB)).toBeUndefined()
    expect(tagOf({ other_config: null }, TAG_JOB)).toBeUndefined()
    expect(tagOf({}, TAG_JOB)).toBeUndefined()
  })
  it("reads XO's datetime in XAPI's format and ours, and the chain length", () => {
    expect(tagDatetime({ other_config: { 'xo:backup:datetime': '20261125T22:30:00Z' } })).toBe('20261125T223000Z')
    expect(tagDatetime({ other_config: { 'xo:backup:datetime': '20261125T223000Z' } })).toBe('20261125T223000Z')
    expect(tagDatetime({ other_config: { 'xo:backup:datetime': 'yesterday' } })).toBeUndefined()
    expect(tagChainLength({ other_config: { 'xo:backup:deltaChainLength': '3' } })).toBe(3)
    expect(tagChainLength({ other_config: { 'xo:backup:deltaChainLength': 'x' } })).toBe(0)
    expect(tagChainLength({ other_config: {} })).toBe(0)
  })
})

describe('retention plan', () => {
  const b = (ts: string, diff: boolean, extra: Record<string, boolean> = {}): RetentionBackup => ({
    timestamp: ts,
    metadataPath: `${ts}.json`,
    disks: { v1: { path: `v1/${ts}.vhd`, differencing: diff }, ...Object.fromEntries(Object.entries(extra).map(([k, d]) => [k, { path: `${k}/${ts}.vhd`, differencing: d }])) },
  })
  it('merges deleted ancestors into the oldest kept delta', () => {
    const plan = planRetention([b('4', true), b('1', false), b('2', true), b('3', true)], 2)
    expect(plan.keep.map((x) => x.timestamp)).toEqual(['3', '4'])
    expect(plan.deleteMetadata).toEqual(['1.json', '2.json'])
    expect(plan.merges).toEqual([{ vdiUuid: 'v1', chain: ['v1/1.vhd', 'v1/2.vhd', 'v1/3.vhd'] }])
    expect(plan.deleteVhds).toEqual([])
  })
  it('deletes deleted VHDs nothing depends on (kept full, new disk)', () => {
    const plan = planRetention([b('1', false), b('2', true), b('3', false, { v2: false }), b('4', true, { v2: true })], 2)
    expect(plan.merges).toEqual([])
    expect(plan.deleteVhds).toEqual(['v1/1.vhd', 'v1/2.vhd'])
    expect(planRetention([b('1', false)], 1).deleteMetadata).toEqual([])
    expect(() => planRetention([], 0)).toThrow(/exportRetention/)
  })
})

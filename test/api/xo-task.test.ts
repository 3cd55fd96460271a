/**
 * XO's backup job as the task schema sees it: the fixture of what xo-server sends (every job field and
 * setting XO knows) is accepted with nothing unknown; fields XO may add later are kept and reported;
 * invalid values of known fields and prototype keys are refused with E_TASK_INVALID naming the field.
 * And smart mode: XO's value-matcher semantics, and the VMs a pattern selects.
 */
import { describe, expect, it } from 'vitest'
import { TaskInvalidError } from '../../src/common/errors.js'
import { matchPattern, selectVms, xoVmObject } from '../../src/backup/smart-mode.js'
import { taskFromXo, type XoRunParams } from '../../src/api/xo-job.js'
import { parseTask, unknownTaskFields, type BackupRunTask } from '../../src/queue/tasks.js'
import { xoRunParams } from './fixture.js'

const VM = '6f0c2f5e-1b2a-4c3d-8e9f-0a1b2c3d4e5f'
const params = () => xoRunParams({ job: 'a1b2c3d4-0000-4000-8000-000000000001', vm: VM, remoteUrl: 'file:///tmp/r', xapiUrl: 'https://10.0.0.1', xapiUser: 'root', xapiPassword: 'pw' }) as unknown as XoRunParams & Record<string, unknown>

function parsed(p: XoRunParams): BackupRunTask {
  return parseTask(taskFromXo(p).task) as BackupRunTask
}

function refusal(p: XoRunParams): TaskInvalidError {
  try {
    parsed(p)
  } catch (error) {
    expect(error).toBeInstanceOf(TaskInvalidError)
    return error as TaskInvalidError
  }
  throw new Error('expected a refusal')
}

describe('XO backup job in the task schema', () => {
  it('accepts everything xo-server sends, keeps it, and knows every field', () => {
    const task = parsed(params())
    expect(task.job.vms).toEqual({ uuid: [VM] })
    const job = task.job as Record<string, unknown>
    expect([job.type, typeof job.proxy, typeof job.userId]).toEqual(['backup', 'string', 'string'])
    expect(job.remotes).toEqual({ id: { __or: ['b8a4f9c2-0f3e-4a43-9d6b-6f7e8a9b0c1d'] } })
    expect(task.job.settings['']).toMatchObject({ reportWhen: 'failure', offlineBackup: false, longTermRetention: {} })
    expect(task.schedule).toMatchObject({ cron: '0 2 * * *', enabled: true })
    expect(task.jobData).toMatchObject({ runJobId: '1764867000000' })
    expect(unknownTaskFields(task)).toEqual([])
  })

  it('a replication-only job (srs, no remote) is accepted; one with neither remote nor SR is refused', () => {
    const SR = 'd1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6'
    const p = params()
    p.remotes = {}
    p.job.srs = { id: { __or: [SR] } }
    const task = parsed(p)
    expect(task.remotes).toEqual({})
    expect((task.job as Record<string, unknown>).srs).toEqual({ id: { __or: [SR] } })
    delete p.job.srs
    expect(refusal(p).message).toMatch(/remotes.*at least one remote \(or SRs in job\.srs\)/)
  })

  it('keeps fields XO adds later and reports them', () => {
    const p = params()
    p.job.newJobField = { a: 1 }
    ;(p.job.settings as Record<string, Record<string, unknown>>)['']!.brandNewSetting = true
    p.schedule.newScheduleField = 'x'
    const task = parsed(p)
    expect((task.job as Record<string, unknown>).newJobField).toEqual({ a: 1 })
    expect(unknownTaskFields(task).sort()).toEqual(['job.newJobField', 'job.settings[""].brandNewSetting', 'schedule.newScheduleField'])
  })

  it.each([
    ['a report setting', (p: XoRunParams) => ((p.job.settings as Record<string, Record<string, unknown>>)['']!.reportWhen = 'sometimes'), 'reportWhen'],
    ['a boolean setting', (p: XoRunParams) => ((p.job.settings as Record<string, Record<string, unknown>>)['']!.offlineBackup = 'yes'), 'offlineBackup'],
    ['a negative retention', (p: XoRunParams) => ((p.job.settings as Record<string, Record<string, unknown>>)['c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f']!.copyRetention = -1), 'copyRetention'],
    ['the job type', (p: XoRunParams) => (p.job.type = 'otherBackup'), 'job.type'],
    ['the compression', (p: XoRunParams) => (p.job.compression = 'lz4'), 'job.compression'],
    ['the srs pattern', (p: XoRunParams) => (p.job.srs = { id: 3 }), 'job.srs'],
    ['a schedule flag', (p: XoRunParams) => (p.schedule.enabled = 'true'), 'schedule.enabled'],
    ['a VM id', (p: XoRunParams) => (p.job.vms = { id: 'not-a-uuid' }), 'job.vms'],
  ])('refuses an invalid %s naming it', (_what, mutate, field) => {
    const p = params()
    mutate(p)
    expect(refusal(p).message).toContain(field)
  })

  it.each(['__proto__', 'constructor', 'prototype'])('refuses a %s key in the job, its settings or its schedule', (key) => {
    for (const where of ['job', 'settings', 'schedule'] as const) {
      const p = params()
      const target = where === 'job' ? p.job : where === 'schedule' ? p.schedule : (p.job.settings as Record<string, Record<string, unknown>>)['']!
      Object.defineProperty(target, key, { value: { polluted: true }, enumerable: true, configurable: true, writable: true })
      const error = refusal(p)
      expect(error.code).toBe('E_TASK_INVALID')
      expect(error.message).toContain(key)
    }
  })

  it('passes a smart-mode pattern on, as a pattern', () => {
    const p = params()
    p.job.vms = { $pool: { __or: ['pool-1'] }, tags: { __not: { __or: [['skip']] } }, power_state: 'Running' }
    expect(parsed(p).job.vms).toEqual({ type: 'VM', $pool: { __or: ['pool-1'] }, tags: { __not: { __or: [['skip']] } }, power_state: 'Running' })
  })
})

describe('smart mode', () => {
  it('matches as XO value-matcher does', () => {
    expect(matchPattern({ a: 1 }, { a: 1, b: 2 })).toBe(true)
    expect(matchPattern({ a: 1 }, { b: 2 })).toBe(false)
    expect(matchPattern({ tags: ['x'] }, { tags: ['y', 'x'] })).toBe(true)
    expect(matchPattern({ tags: ['x', 'z'] }, { tags: ['y', 'x'] })).toBe(false)
    expect(matchPattern({ tags: { __or: [['x'], ['z']] } }, { tags: ['z'] })).toBe(true)
    expect(matchPattern({ tags: { __not: { __or: [['x']] } } }, { tags: ['z'] })).toBe(true)
    expect(matchPattern({ __and: [{ a: 1 }, { b: 2 }] }, { a: 1, b: 2 })).toBe(true)
    expect(matchPattern({ a: { __not: 1 } }, { a: 2 })).toBe(true)
    expect(matchPattern({ a: { __not: 1 } }, {})).toBe(false)
    expect(matchPattern('x', 'x')).toBe(true)
    expect(matchPattern({ a: 1 }, null)).toBe(false)
  })

  it('selects VMs by pool, tags and power state, minus xo:no-bak and this job’s replicas', () => {
    const vm = (uuid: string, extra: Record<string, unknown>) => xoVmObject({ uuid, name_label: uuid, power_state: 'Running', tags: [], other_config: {}, blocked_operations: {}, ...extra }, 'pool-a')
    const vms = [
      vm('1', { tags: ['prod'] }),
      vm('2', { tags: ['prod'], power_state: 'Halted' }),
      vm('3', { tags: ['prod', 'xo:no-bak=test'] }),
      vm('4', { tags: ['prod'], blocked_operations: { start: 'replica' }, other_config: { 'xo:backup:job': 'job-1' } }),
      vm('5', { tags: ['dev'] }),
    ]
    expect(selectVms({ $pool: { __or: ['pool-a'] }, tags: { __or: [['prod']] }, power_state: 'Running' }, vms, 'job-1')).toEqual(['1'])
    expect(selectVms({ tags: { __not: { __or: [['prod']] } } }, vms, 'job-1')).toEqual(['5'])
    expect(() => selectVms({ $pool: 'pool-b' }, vms, 'job-1')).toThrow(/no VMs match/)
  })
})

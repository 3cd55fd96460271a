/**
 * The task-log lines `backup`, `job follow` and `job logs` print name what they belong to, for every
 * line kind (start, info, warning, end ok/failed, a task whose start was not seen): the VM by name and
 * uuid (name from the task data, the caller's map, or the job's one-name pattern; the uuid alone when no
 * name is known), and below an export task the remote (or SR) too. Events interleave as a run of two
 * VMs on two targets makes them.
 */
import { describe, expect, it } from 'vitest'
import type { JsonValue } from '../../src/common/errors.js'
import { namesOfTask, renderEvent, renderTaskTree } from '../../src/cli/job-view.js'
import type { TaskLogEvent, TaskSummary } from '../../src/queue/task-log.js'

const VM_A = '11111111-1111-4111-8111-111111111111'
const VM_B = '22222222-2222-4222-8222-222222222222'
const SR = '33333333-3333-4333-8333-333333333333'
const T0 = Date.UTC(2026, 11, 4, 22, 0, 0)

/** Two VMs backed up at once: VM A to remote r1, VM B to r1 and an SR, with infos, warnings, a failure. */
function events(): TaskLogEvent[] {
  let t = T0
  const at = () => (t += 1000)
  const start = (taskId: string, parentId: string | undefined, message: string, data?: JsonValue): TaskLogEvent => ({
    event: 'start', taskId, ...(parentId === undefined ? {} : { parentId }), timestamp: at(), message, ...(data === undefined ? {} : { data }),
  })
  return [
    start('root', undefined, 'backup', { jobName: 'nightly', mode: 'delta' }),
    start('vmA', 'root', 'backup VM', { type: 'VM', id: VM_A }),
    start('vmB', 'root', 'backup VM', { type: 'VM', id: VM_B }),
    { event: 'info', taskId: 'vmA', timestamp: at(), message: 'full backup: no base' },
    start('snapA', 'vmA', 'snapshot'),
    start('snapB', 'vmB', 'snapshot'),
    { event: 'end', taskId: 'snapA', timestamp: at(), status: 'success', result: 'snap-uuid' },
    { event: 'end', taskId: 'snapB', timestamp: at(), status: 'success' },
    start('expA', 'vmA', 'export', { type: 'remote', id: 'r1', isFull: true }),
    start('expB1', 'vmB', 'export', { type: 'remote', id: 'r1', isFull: false }),
    start('expB2', 'vmB', 'export', { type: 'SR', id: SR, name_label: 'Local storage', isFull: false }),
    start('trA', 'expA', 'transfer'),
    start('trB1', 'expB1', 'transfer'),
    start('trB2', 'expB2', 'transfer'),
    { event: 'warning', taskId: 'trB1', timestamp: at(), message: 'slow remote', data: { error: 'EAGAIN' } },
    { event: 'end', taskId: 'trA', timestamp: at(), status: 'success', result: { size: 8 * 1024 * 1024 } },
    { event: 'end', taskId: 'trB1', timestamp: at(), status: 'failure', result: { code: 'ENOSPC', message: 'no space left on device' } },
    { event: 'end', taskId: 'trB2', timestamp: at(), status: 'success', result: { size: 1024 } },
    start('mergeA', 'expA', 'merge'),
    { event: 'end', taskId: 'mergeA', timestamp: at(), status: 'success' },
    { event: 'end', taskId: 'expA', timestamp: at(), status: 'success' },
    start('hcA', 'vmA', 'health check', { remote: 'r1' }),
    { event: 'end', taskId: 'hcA', timestamp: at(), status: 'success' },
    { event: 'end', taskId: 'expB1', timestamp: at(), status: 'failure', result: { code: 'ENOSPC', message: 'no space left on device' } },
    { event: 'end', taskId: 'expB2', timestamp: at(), status: 'success' },
    { event: 'end', taskId: 'vmA', timestamp: at(), status: 'success' },
    { event: 'end', taskId: 'vmB', timestamp: at(), status: 'failure', result: { code: 'E_BACKUP', message: 'a target failed' } },
    { event: 'end', taskId: 'never-started', timestamp: at(), status: 'success' },
    { event: 'end', taskId: 'root', timestamp: at(), status: 'failure' },
  ]
}

function render(names: Parameters<typeof renderEvent>[2]): string[] {
  const byId = new Map<string, TaskSummary>()
  return events().map((e) => renderEvent(e, byId, names))
}

describe('task-log lines', () => {
  it('every line of a VM names it (name and uuid), every line below an export task names its remote or SR', () => {
    const lines = render({ vms: new Map([[VM_A, 'web-01'], [VM_B, 'db-01']]), remotes: new Map([['r1', 'nfs://filer/backups']]) })
    const all = events()
    expect(lines).toHaveLength(all.length)
    const byId = new Map(all.flatMap((e) => (e.event === 'start' ? [[e.taskId, e] as const] : [])))
    const vmOf = (taskId: string): string | undefined => {
      for (let s = byId.get(taskId); s !== undefined; s = s.parentId === undefined ? undefined : byId.get(s.parentId)) {
        if (s.taskId === 'vmA') return `VM web-01 (${VM_A})`
        if (s.taskId === 'vmB') return `VM db-01 (${VM_B})`
      }
      return undefined
    }
    const targetOf = (taskId: string): string | undefined => {
      for (let s = byId.get(taskId); s !== undefined; s = s.parentId === undefined ? undefined : byId.get(s.parentId)) {
        if (s.taskId === 'expA' || s.taskId === 'expB1' || s.taskId === 'hcA') return 'remote r1'
        if (s.taskId === 'expB2') return `SR Local storage (${SR})`
      }
      return undefined
    }
    all.forEach((e, i) => {
      const line = lines[i]!
      const vm = vmOf(e.taskId)
      if (vm !== undefined) expect(line, `line ${i}`).toContain(vm)
      const target = targetOf(e.taskId)
      if (target !== undefined) expect(line, `line ${i}`).toContain(target)
      expect(line, `line ${i}`).not.toMatch(/VM [0-9a-f-]{36}/) // no VM by uuid alone when its name is known
    })
    expect(lines[0]).toBe('22:00:01 start  backup job nightly (delta)')
    expect(lines).toContain(`22:00:04 info  VM web-01 (${VM_A}): full backup: no base`)
    expect(lines).toContain(`22:00:09 start  VM web-01 (${VM_A}): export to remote r1 nfs://filer/backups (full)`)
    expect(lines).toContain(`22:00:14 start  VM db-01 (${VM_B}) → SR Local storage (${SR}): transfer`)
    expect(lines).toContain(`22:00:15 warning  VM db-01 (${VM_B}) → remote r1: transfer: slow remote: EAGAIN`)
    expect(lines.find((l) => l.includes('FAILED') && l.includes('transfer'))).toBe(`22:00:17 FAILED  VM db-01 (${VM_B}) → remote r1: transfer  4.0s: [ENOSPC] no space left on device — fix: free space on the remote or lower the retention`)
    expect(lines).toContain(`22:00:19 start  VM web-01 (${VM_A}) → remote r1: merge`)
    expect(lines).toContain(`22:00:22 start  VM web-01 (${VM_A}): health check on remote r1 nfs://filer/backups`)
    expect(lines).toContain('22:00:28 ok  task never-started')
  })

  it('names from the task data (name_label) or the job\'s one-name pattern; the uuid alone when no name is known', () => {
    const withLabel = renderEvent({ event: 'start', taskId: 'v', timestamp: T0, message: 'backup VM', data: { type: 'VM', id: VM_A, name_label: 'web-01' } }, new Map())
    expect(withLabel).toContain(`VM web-01 (${VM_A})`)
    const names = namesOfTask({ job: { vms: { name_label: 'web-01' } }, remotes: { r1: { url: 'smb://user:secret@host/share' }, r2: { url: 'bpseal1.abc.def' }, r3: { url: { sealed: 'x' } } } }, (u) => u.replace(/:[^:@/]*@/, ':***@'))
    expect(names.vmName).toBe('web-01')
    expect([...names.remotes!]).toEqual([['r1', 'smb://user:***@host/share']])
    expect(render(names).filter((l) => l.includes(VM_B))[0]).toContain(`VM web-01 (${VM_B})`)
    // two names in the pattern: which VM is which is not known, the uuid alone says it
    expect(namesOfTask({ job: { vms: { name_label: { __or: ['a', 'b'] } } } }, (u) => u).vmName).toBeUndefined()
    const bare = render({})
    expect(bare.find((l) => l.includes('snapshot'))).toBe(`22:00:05 start  VM ${VM_A}: snapshot`)
    expect(bare.find((l) => l.includes('merge'))).toBe(`22:00:19 start  VM ${VM_A} → remote r1: merge`)
  })

  it('the tree names VMs and targets on their own lines, children indented below them', () => {
    const tree: TaskSummary = {
      id: 'root', message: 'backup', data: { jobName: 'nightly', mode: 'delta' }, start: T0, end: T0 + 5000, status: 'success',
      tasks: [{
        id: 'vmA', message: 'backup VM', data: { type: 'VM', id: VM_A }, start: T0, end: T0 + 4000, status: 'success',
        tasks: [{ id: 'expA', message: 'export', data: { type: 'remote', id: 'r1', isFull: false }, start: T0, end: T0 + 3000, status: 'success', tasks: [{ id: 'trA', message: 'transfer', start: T0, end: T0 + 2000, status: 'success', result: { size: 2 * 1024 * 1024 } }] }],
      }],
    }
    const text = renderTaskTree(tree, { vms: new Map([[VM_A, 'web-01']]), remotes: new Map([['r1', 'file:///srv/backups']]) })
    expect(text.split('\n')).toEqual([
      'ok  backup job nightly (delta)  5.0s',
      `    ok  VM web-01 (${VM_A})  4.0s`,
      '        ok  export to remote r1 file:///srv/backups (delta)  3.0s',
      '            ok  transfer  2.0 MiB, 2.0s, 1.0 MiB/s',
      '',
    ])
  })
})

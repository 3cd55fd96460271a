import { describe, expect, it } from 'vitest'
import { BackupProxyError, TaskInvalidError } from '../../src/common/errors.js'
import { SealKey, sealFields, unsealFields } from '../../src/queue/seal.js'
import { MAX_TASK_BYTES, parseTask, SECRET_PATHS, type BackupRunTask } from '../../src/queue/tasks.js'
import { consolidate, eventsInSummary, eventsOfTree, LogTask, type TaskLogEvent } from '../../src/queue/task-log.js'
import { backupTask } from '../workers/fixtures.js'

function invalid(input: unknown): TaskInvalidError {
  try {
    parseTask(input)
  } catch (error) {
    expect(error).toBeInstanceOf(TaskInvalidError)
    return error as TaskInvalidError
  }
  throw new Error('expected the task to be refused')
}

describe('task schemas', () => {
  it('accepts a backup.run in XO shape and applies defaults', () => {
    const task = parseTask(backupTask({ jobId: 'j1' }))
    expect(task.kind).toBe('backup.run')
    if (task.kind !== 'backup.run') return
    expect(task.xapis.x1?.allowUnauthorized).toBe(false)
    expect(task.recordToXapi).toEqual({})
  })

  it.each([
    ['missing field', (t: Record<string, unknown>) => delete t.schedule, 'schedule'],
    ['wrong type', (t: Record<string, unknown>) => ((t.job as Record<string, unknown>).mode = 3), 'job.mode'],
    ['traversal in job id', (t: Record<string, unknown>) => ((t.job as Record<string, unknown>).id = '../../etc'), 'job.id'],
    ['traversal in a remote id', (t: Record<string, unknown>) => (t.remotes = { '..': { url: 'file:///x' } }), 'remotes'],
    ['slash in schedule id', (t: Record<string, unknown>) => (t.schedule = { id: 'a/b' }), 'schedule.id'],
    ['VM id not a UUID', (t: Record<string, unknown>) => ((t.job as Record<string, unknown>).vms = { uuid: ['not-a-uuid'] }), 'job.vms'],
    ['bad remote URL', (t: Record<string, unknown>) => (t.remotes = { r1: { url: 'ftp://x/y' } }), 'remotes.r1.url'],
    ['unknown field', (t: Record<string, unknown>) => (t.extra = 1), 'extra'],
    ['encryption key of the wrong size', (t: Record<string, unknown>) => (t.remotes = { r1: { url: 'file:///x', options: { encryptionKey: 's3cr3t-Pa55' } } }), 'remotes.r1.options.encryptionKey'],
    ['recordToXapi naming an unknown XAPI', (t: Record<string, unknown>) => (t.recordToXapi = { '33333333-3333-4333-8333-333333333333': 'nope' }), 'recordToXapi'],
  ])('refuses %s with E_TASK_INVALID naming the field', (_name, mutate, field) => {
    const task = structuredClone(backupTask()) as unknown as Record<string, unknown>
    mutate(task)
    const error = invalid(task)
    expect(error.code).toBe('E_TASK_INVALID')
    expect(error.fields.field).toEqual(expect.stringContaining(field))
    expect(error.message).toContain(field)
    expect(error.message).not.toContain('s3cr3t-Pa55')
  })

  it('refuses an unknown kind and a huge payload', () => {
    expect(invalid({ kind: 'vm.delete' }).fields.field).toBe('kind')
    const huge = backupTask({ settings: { blob: 'x'.repeat(MAX_TASK_BYTES) } })
    const error = invalid(huge)
    expect(error.fields.field).toBe('(task)')
    expect(error.message).toMatch(/bytes, more than/)
  })

  it('refuses traversal in metadata paths of verify/restore', () => {
    const error = invalid({ kind: 'backup.verify', remote: { url: 'file:///b' }, metadataPath: 'xo-vm-backups/../../x.json' })
    expect(error.fields.field).toBe('metadataPath')
  })

  it('reuses a recent result for the same plain JSON task, never for an invalid one', () => {
    const text = JSON.stringify(backupTask({ jobId: 'memo-job' }))
    const first = parseTask(JSON.parse(text))
    const second = parseTask(JSON.parse(text))
    expect(second).toEqual(first)
    expect(second).toEqual(parseTask(JSON.parse(text)))
    // a fresh object each time: a processor changing its task changes no other job's
    expect(second).not.toBe(first)
    ;(second as BackupRunTask).job.name = 'changed'
    expect((parseTask(JSON.parse(text)) as BackupRunTask).job.name).toBe('test job')
    // invalid stays invalid, however often it comes
    const bad = JSON.stringify({ ...(JSON.parse(text) as object), schedule: { id: '../x' } })
    for (let i = 0; i < 2; i++) expect(() => parseTask(JSON.parse(bad))).toThrow(TaskInvalidError)
    // an object that is not plain JSON is always checked by the schema, even when its JSON text was valid
    const file = { kind: 'remote.test', remote: { url: 'file:///b', options: { uid: 0 } } }
    expect(parseTask(file)).toEqual(file)
    expect(() => parseTask({ ...file, remoteId: () => 'x' })).toThrow(TaskInvalidError)
    expect(() => parseTask({ ...file, remote: { ...file.remote, options: { uid: Number.NaN } } })).toThrow(TaskInvalidError)
    expect(() => parseTask({ ...file, remote: { ...file.remote, options: { uid: 0, nfsWindow: undefined, gid: Number.POSITIVE_INFINITY } } })).toThrow(TaskInvalidError)
  })
})

describe('sealing', () => {
  const key = SealKey.generate()

  it('seals every secret path and opens them back', () => {
    const task = parseTask(backupTask())
    const sealed = sealFields(task, SECRET_PATHS[task.kind], key)
    const text = JSON.stringify(sealed)
    expect(text).not.toContain('s3cr3t-Pa55')
    expect(text).toContain('bpseal1.')
    expect(unsealFields(sealed, SECRET_PATHS[task.kind], key)).toEqual(task)
  })

  it('fails clearly with another key, a moved value or a value that is not sealed', () => {
    const task = parseTask(backupTask())
    const sealed = sealFields(task, SECRET_PATHS[task.kind], key) as unknown as { xapis: { x1: { credentials: string } }; remotes: { r1: { url: string } } }
    expect(() => unsealFields(sealed, SECRET_PATHS['backup.run'], SealKey.generate())).toThrow(/same security.sealKey/)
    const moved = structuredClone(sealed)
    moved.remotes.r1.url = sealed.xapis.x1.credentials
    let e: unknown
    try {
      unsealFields(moved, SECRET_PATHS['backup.run'], key)
    } catch (error) {
      e = error
    }
    expect((e as BackupProxyError).code).toBe('E_ENCRYPTION')
    expect(() => unsealFields(task, SECRET_PATHS['backup.run'], key)).toThrow(/not a sealed value/)
  })

  it('remembers recent values: the same secret in the same field seals alike, an opened value opens without decrypting', () => {
    const a = key.seal({ username: 'root', password: 'pw' }, 'xapis.x1.credentials')
    expect(key.seal({ username: 'root', password: 'pw' }, 'xapis.x1.credentials')).toBe(a)
    expect(key.seal({ username: 'root', password: 'pw' }, 'xapis.x2.credentials')).not.toBe(a)
    expect(key.seal({ username: 'root', password: 'pw2' }, 'xapis.x1.credentials')).not.toBe(a)
    const opened = key.unseal(a, 'xapis.x1.credentials') as { password: string }
    opened.password = 'changed by a caller'
    expect(key.unseal(a, 'xapis.x1.credentials')).toEqual({ username: 'root', password: 'pw' })
    // remembered under its field: moved elsewhere, it is still refused
    expect(() => key.unseal(a, 'xapis.x2.credentials')).toThrow(/same security.sealKey/)
    // another key never opens it
    expect(() => SealKey.generate().unseal(a, 'xapis.x1.credentials')).toThrow(/same security.sealKey/)
  })

  it('refuses keys of the wrong size', () => {
    expect(() => SealKey.fromString('abcd')).toThrow(/32 random bytes/)
  })
})

describe('task log', () => {
  it('consolidates events into XO’s tree', () => {
    const events: TaskLogEvent[] = []
    const root = new LogTask((e) => events.push(e), 'root')
    events.push({ event: 'start', taskId: 'root', timestamp: 1, message: 'backup.run' })
    const vm = root.child('VM', { id: 'vm1' })
    vm.warning('slow')
    vm.end('failure', { message: 'boom' })
    root.end('failure')
    const [tree] = consolidate(events)
    expect(tree?.status).toBe('failure')
    expect(tree?.tasks?.[0]).toMatchObject({ message: 'VM', status: 'failure', warnings: [{ message: 'slow' }], result: { message: 'boom' } })
  })

  it('rebuilds the exact events of a tree without infos or warnings, and only of a summary that says so', () => {
    const events: TaskLogEvent[] = []
    const root = new LogTask((e) => events.push(e), 'root')
    events.push({ event: 'start', taskId: 'root', timestamp: 1, message: 'remote.test', data: { type: 'remote.test' } })
    const a = root.child('A', { n: 1 })
    a.child('A1').end('success', { bytes: 3 })
    a.end('success')
    root.child('B').end('skipped')
    root.end('success', { ok: true })
    const [tree] = consolidate(events)
    expect(JSON.stringify(eventsOfTree(tree!))).toBe(JSON.stringify(events))
    // through JSON (as BullMQ stores the return value), marked as carrying its events
    expect(eventsInSummary(JSON.parse(JSON.stringify({ ...tree, taskLogInSummary: true })))).toEqual(events)
    expect(eventsInSummary(JSON.parse(JSON.stringify(tree)))).toEqual([])
    expect(eventsInSummary({ taskLogInSummary: true, id: 'x', tasks: 'not a list' })).toEqual([])
    // infos carry no timestamp in the tree: not rebuildable
    root.info('late')
    expect(eventsOfTree(consolidate(events)[0]!)).toBeUndefined()
  })
})

/**
 * Keys that name JavaScript's object machinery (`__proto__`, `constructor`, `prototype`) anywhere in a
 * task are refused with E_TASK_INVALID naming the path: zod's records skip them, so a remote given under
 * `__proto__` would otherwise be dropped silently and never written.
 */
import { describe, expect, it } from 'vitest'
import { TaskInvalidError } from '../../src/common/errors.js'
import { parseTask } from '../../src/queue/tasks.js'
import { backupTask } from '../workers/fixtures.js'

function refusal(input: unknown): TaskInvalidError {
  try {
    parseTask(input)
  } catch (error) {
    expect(error).toBeInstanceOf(TaskInvalidError)
    return error as TaskInvalidError
  }
  throw new Error('expected the task to be refused')
}

describe('forbidden keys in a task', () => {
  it.each(['__proto__', 'constructor', 'prototype'])('a remote under "%s" (task read from JSON) is refused, naming the path', (key) => {
    const task = structuredClone(backupTask()) as unknown as { remotes: Record<string, unknown> }
    const text = JSON.stringify(task).replace('"remotes":{', `"remotes":{"${key}":{"url":"file:///tmp/elsewhere"},`)
    const input: unknown = JSON.parse(text)
    const error = refusal(input)
    expect(error.code).toBe('E_TASK_INVALID')
    expect(error.fields.field).toBe(`remotes.${key}`)
    expect(error.message).toContain(`remotes.${key}`)
  })

  it('refuses them at any depth, including settings and the top level', () => {
    const nested = JSON.parse(JSON.stringify(backupTask()).replace('"settings":{"":{', '"settings":{"":{"constructor":{"prototype":1},')) as unknown
    expect(refusal(nested).fields.field).toBe("job.settings[''].constructor")
    const top = JSON.parse(JSON.stringify(backupTask()).replace('{', '{"__proto__":{"kind":"remote.test"},')) as unknown
    expect(refusal(top).fields.field).toBe('__proto__')
  })

  it('still accepts such words as values', () => {
    const task = backupTask({ jobId: 'constructor' })
    expect(parseTask(task).kind).toBe('backup.run')
  })
})

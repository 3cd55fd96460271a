/**
 * `task.*`: the runs started through this API as XO tasks (runs.ts). `getAll` streams them (NDJSON, as
 * XO's array answer), `get` answers one, `cancel` cancels its queue job (it ends `interrupted`), `destroy`
 * forgets a finished one. An unknown id → XO's "no such task" (code 1).
 */
import { z } from 'zod'
import { method, noSuchObject, RpcError, RPC_CODES, type MethodDefinition } from '../rpc.js'
import type { RunRegistry } from '../runs.js'

const taskIdParam = z.object({ taskId: z.string().min(1).max(128) }).strict()

export function taskMethods(runs: RunRegistry): Record<string, MethodDefinition> {
  const find = (taskId: string) => {
    const rec = runs.get(taskId)
    if (rec === undefined) throw noSuchObject(taskId, 'task')
    return rec
  }
  return {
    'task.getAll': method('returns every task of this API (finished ones until destroyed)', z.object({}).strict(), () => runs.all().map((r) => r.tree.snapshot() ?? { id: r.id })),
    'task.get': method('returns one task', taskIdParam, ({ taskId }) => find(taskId).tree.snapshot() ?? { id: taskId }),
    'task.cancel': method('cancels a running task (its backup ends interrupted)', taskIdParam, async ({ taskId }) => {
      find(taskId)
      await runs.cancel(taskId)
    }),
    'task.destroy': method('forgets a finished task', taskIdParam, ({ taskId }) => {
      if (!find(taskId).done) throw new RpcError(RPC_CODES.SERVER_ERROR, `task ${taskId} is still running: cancel it (task.cancel) and wait for its end first`, { code: 'E_JOB_RUNNING', taskId })
      runs.destroy(taskId)
    }),
  }
}

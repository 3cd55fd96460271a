/**
 * The task log of a backup run, in Xen Orchestra's shape: a tree of tasks, each reported as events
 * (`start` / `info` / `warning` / `end`) carrying `taskId`, `parentId`, `timestamp`, and on `end` a
 * `status` (success | failure | interrupted | skipped) and a `result`. Events are streamed as they
 * happen (to job logs / QueueEvents through the `emit` callback) and the whole tree is returned as the
 * job's value (`summary()`).
 *
 * The task log is implemented once, in the queue's contract (`queue/task-log.ts`: `LogTask`, its events,
 * statuses and summaries): the job runner's root task and the engine's tasks are the same class. The
 * engine calls it `Task`; this module is only that name and the engine's ways in (`createTaskLog` for a
 * run of its own, `attachTaskLog` under the job runner's root task).
 */
export { LogTask as Task, attachTaskLog, createTaskLog } from '../queue/task-log.js'
export type { TaskLogEvent, TaskSummary } from '../queue/task-log.js'

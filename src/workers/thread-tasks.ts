/**
 * Registry of the stream tasks a Piscina thread can run, by name. Every thread imports this file (so all
 * task modules) when it starts; the main thread imports it for TYPES only, so task input, output and
 * progress types flow from the module to `pool.run(name, input, { onProgress })` and to the messages
 * both sides exchange (messages.ts). Imports are static on purpose: a dynamic import() inside a thread
 * started with `--import tsx` bypasses tsx's resolver on Node 20 (`.js` -> `.ts` fails).
 *
 * To add a task: write a module that default-exports a `ThreadTask<Input, Output, Progress>`
 * (thread-task.ts), import it here and add one entry, e.g. `'backup.disk': backupDisk,`.
 */
import type { ThreadTask } from './thread-task.js'
import standinNoop from './stand-ins/noop.thread.js'
import standinStream from './stand-ins/stream.thread.js'
import standinModules from './stand-ins/modules.thread.js'
import backupDisk from '../backup/disk.thread.js'
import backupRestoreDisk from '../backup/restore-disk.thread.js'
import mirrorCopy from '../backup/mirror.thread.js'
import backupXva from '../backup/xva.thread.js'
import backupRestoreXva from '../backup/restore-xva.thread.js'
import { threadRemotes } from '../backup/disk-export.js'

const registry = {
  /** stand-in: returns its input (dispatch overhead bench, pool tests) */
  'standin.noop': standinNoop,
  /** stand-in: writes N bytes slowly to a temp file, publishes it by rename; honours cooperative cancel */
  'standin.stream': standinStream,
  /** stand-in: the npm packages the thread has loaded (CommonJS registry), to test what a thread loads */
  'standin.modules': standinModules,
  /** one disk of a backup: XAPI export → VHD parse/validate → fan-out to the target remotes (src/backup) */
  'backup.disk': backupDisk,
  /** one disk of a restore: remote chain → flattened VHD → XAPI import into a new VDI (src/backup) */
  'backup.restoreDisk': backupRestoreDisk,
  /** one VHD or file of a mirrored backup: source remote → target remotes (src/backup/mirror-copy.ts) */
  'mirror.copy': mirrorCopy,
  /** one full backup: XAPI's XVA export → every target remote, validated, with XO's checksum file (src/backup) */
  'backup.xva': backupXva,
  /** one full backup restored: the XVA on a remote → XAPI's VM import, checksum verified (src/backup) */
  'backup.restoreXva': backupRestoreXva,
} as const

export type ThreadTaskName = keyof typeof registry
type TaskFn<N extends ThreadTaskName> = (typeof registry)[N]
export type ThreadTaskInput<N extends ThreadTaskName> = Parameters<TaskFn<N>>[0]
export type ThreadTaskOutput<N extends ThreadTaskName> = Awaited<ReturnType<TaskFn<N>>>
/** What the task posts as progress (the `progress` its context takes). */
export type ThreadTaskProgress<N extends ThreadTaskName> = Parameters<TaskFn<N>>[1] extends { progress: (progress: infer P) => void } ? P : never

/**
 * Every task, typed by its name: a task that cannot run with a `ThreadTaskContext` of its own progress
 * type does not compile here.
 */
export const threadTasks: { readonly [N in ThreadTaskName]: ThreadTask<ThreadTaskInput<N>, ThreadTaskOutput<N>, ThreadTaskProgress<N>> } = registry

export function isThreadTaskName(name: unknown): name is ThreadTaskName {
  return typeof name === 'string' && Object.hasOwn(threadTasks, name)
}

/**
 * What a thread holds between tasks and closes before it is torn down (thread-release.ts): the remotes its
 * disk exports and mirror copies leased (NFS unmount, SMB logoff, S3 client destroyed). Each leaves the
 * thread usable: a later task opens again what it needs.
 */
export async function releaseThreadResources(): Promise<void> {
  await threadRemotes.close()
}

/**
 * Registry of the stream tasks a Piscina thread can run, by name. Every thread imports this file (so all
 * task modules) when it starts; the main thread imports it for TYPES only, so task input/output types flow
 * from the module to `pool.run(name, input)`. Imports are static on purpose: a dynamic import() inside a
 * thread started with `--import tsx` bypasses tsx's resolver on Node 20 (`.js` -> `.ts` fails).
 *
 * To add a task: write a module that default-exports a `ThreadTask<Input, Output>` (thread-task.ts),
 * import it here and add one entry, e.g. `'backup.disk': backupDisk,`.
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

export const threadTasks = {
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
} as const satisfies Record<string, ThreadTask<never, unknown>>

export type ThreadTaskRegistry = typeof threadTasks
export type ThreadTaskName = keyof ThreadTaskRegistry
type TaskFn<N extends ThreadTaskName> = ThreadTaskRegistry[N]
export type ThreadTaskInput<N extends ThreadTaskName> = Parameters<TaskFn<N>>[0]
export type ThreadTaskOutput<N extends ThreadTaskName> = Awaited<ReturnType<TaskFn<N>>>

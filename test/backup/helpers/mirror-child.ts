/**
 * A mirror run in its own process (for the SIGKILL test): env MIRROR_TASK (a backup.mirror task file),
 * HOLD_AFTER (after that many files copied, print "holding" and wait to be killed, before the backup's
 * metadata is written). Prints "copied <path>" per file and "done <status>" at the end.
 */
import { readFile } from 'node:fs/promises'
import { backupSchema } from '../../../src/config/schema.js'
import { inlineCopier, runMirror } from '../../../src/backup/mirror.js'
import { parseTask, type BackupMirrorTask } from '../../../src/queue/tasks.js'

const task = parseTask(JSON.parse(await readFile(process.env.MIRROR_TASK!, 'utf8'))) as BackupMirrorTask
const holdAfter = Number(process.env.HOLD_AFTER ?? '0')
let copied = 0
const summary = await runMirror(task, {
  defaults: backupSchema.parse({}),
  copier: inlineCopier,
  signal: new AbortController().signal,
  onFileCopied: async (path) => {
    copied++
    process.stdout.write(`copied ${path}\n`)
    if (copied === holdAfter) {
      process.stdout.write('holding\n')
      await new Promise(() => undefined)
    }
  },
})
process.stdout.write(`done ${summary.status}\n`)

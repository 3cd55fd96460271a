/** Names on a remote: writers' temporaries, hidden entries, listing order (helpers of remote.ts). */
import { posix } from 'node:path'
import type { ListEntry } from './remote-types.js'

/** Name of the temporary a writer uses for `path` (hidden, unique per attempt). */
export function temporaryName(path: string, suffix: string): string {
  const dir = posix.dirname(path)
  const base = posix.basename(path)
  const tmp = `.${base}.${suffix}.tmp`
  return dir === '.' ? tmp : `${dir}/${tmp}`
}

/** True for names writers use as temporaries (cleaned up by `removeTemporaries`). */
export function isTemporaryName(name: string): boolean {
  return name.startsWith('.') && name.endsWith('.tmp')
}

export function byPath(a: ListEntry, b: ListEntry): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0
}

/** True when a listed path is hidden (one of its segments starts with `.`: temporaries and what is below). */
export function isHidden(path: string): boolean {
  return path.split('/').some((s) => s.startsWith('.'))
}

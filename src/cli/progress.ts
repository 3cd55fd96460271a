/**
 * Progress of a long command (backup, verify, restore, demo) on stderr: on a terminal one bar redrawn in
 * place with bytes, rate and ETA (`label [#####-----] 45% 1.2 GiB/2.6 GiB 85 MiB/s ETA 17s`); otherwise
 * (a pipe, a log file, CI) a plain line at most every `intervalMs` and at each quarter, never a carriage
 * return. The rate is the average since the first update; the clock is injectable so tests need no timing.
 */
import { formatBytes, formatDurationMs } from '../common/units.js'
import type { CliIo } from './context.js'

interface ProgressUpdate {
  doneBytes?: number | undefined
  totalBytes?: number | undefined
  /** 0-100; derived from the bytes when absent */
  percent?: number | undefined
  /** what is being done now (a VM, a disk) */
  detail?: string | undefined
}

interface ProgressOptions {
  now?: () => number
  /** plain mode: minimum time between two lines (default 10 s) */
  intervalMs?: number
  /** terminal mode: bar width in characters (default 24) */
  width?: number
}

interface Progress {
  update(u: ProgressUpdate): void
  /** a line of its own (an event) above the bar */
  print(text: string): void
  /** the final state, then a newline on a terminal */
  done(u?: ProgressUpdate): void
}

interface State {
  done: number | undefined
  total: number | undefined
  percent: number
  detail: string | undefined
}

function percentOf(u: ProgressUpdate, prev: number): number {
  if (u.percent !== undefined) return Math.max(0, Math.min(100, u.percent))
  if (u.doneBytes !== undefined && u.totalBytes !== undefined && u.totalBytes > 0) return Math.min(100, (u.doneBytes / u.totalBytes) * 100)
  return prev
}

/** "1.2 GiB/2.6 GiB 85 MiB/s ETA 17s" (the parts that are known). */
function describeProgress(s: { done?: number | undefined; total?: number | undefined; percent: number }, elapsedMs: number): string {
  const parts: string[] = []
  if (s.done !== undefined) parts.push(s.total !== undefined && s.total > 0 ? `${formatBytes(s.done)}/${formatBytes(s.total)}` : formatBytes(s.done))
  if (s.done !== undefined && elapsedMs >= 500) {
    const rate = s.done / (elapsedMs / 1000)
    parts.push(`${formatBytes(rate)}/s`)
    const remaining = s.total !== undefined && s.total > 0 ? s.total - s.done : s.percent > 0 ? (s.done * (100 - s.percent)) / s.percent : undefined
    if (remaining !== undefined && rate > 0 && s.percent < 100) parts.push(`ETA ${formatDurationMs((remaining / rate) * 1000)}`)
  }
  return parts.join(' ')
}

export function createProgress(io: CliIo, label: string, options: ProgressOptions = {}): Progress {
  const now = options.now ?? (() => performance.now())
  const interval = options.intervalMs ?? 10_000
  const width = options.width ?? 24
  const start = now()
  const s: State = { done: undefined, total: undefined, percent: 0, detail: undefined }
  let lastDraw = -Infinity
  let lastQuarter = -1
  let lastLine = ''
  const apply = (u: ProgressUpdate) => {
    if (u.doneBytes !== undefined) s.done = u.doneBytes
    if (u.totalBytes !== undefined) s.total = u.totalBytes
    if (u.detail !== undefined) s.detail = u.detail
    s.percent = percentOf(u, s.percent)
  }
  const line = (t: number): string => {
    const info = describeProgress(s, t - start)
    const detail = s.detail === undefined ? '' : ` (${s.detail})`
    if (!io.isTTY) return `${label}: ${Math.floor(s.percent)}%${info === '' ? '' : ` ${info}`}${detail}`
    const filled = Math.round((s.percent / 100) * width)
    return `${label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(Math.floor(s.percent)).padStart(3)}%${info === '' ? '' : ` ${info}`}${detail}`
  }
  const draw = (force: boolean) => {
    const t = now()
    if (io.isTTY) {
      if (!force && t - lastDraw < 100) return
      lastDraw = t
      io.stderr(`\r\x1b[K${line(t)}`)
      return
    }
    const quarter = Math.floor(s.percent / 25)
    if (!force && t - lastDraw < interval && quarter === lastQuarter) return
    const text = line(t)
    if (text === lastLine) return
    lastDraw = t
    lastQuarter = quarter
    lastLine = text
    io.stderr(`${text}\n`)
  }
  return {
    update(u) {
      apply(u)
      draw(false)
    },
    print(text) {
      if (!io.isTTY) return io.stderr(`${text}\n`)
      io.stderr(`\r\x1b[K${text}\n`)
      if (lastDraw !== -Infinity) io.stderr(line(now()))
    },
    done(u) {
      if (u !== undefined) apply(u)
      draw(true)
      if (io.isTTY) io.stderr('\n')
    },
  }
}

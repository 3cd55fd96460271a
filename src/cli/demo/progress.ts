/**
 * Progress display for the demo: a redrawn bar on a terminal, plain lines (at most every few seconds and
 * at each 10%) otherwise, so logs and CI output stay readable; bytes, rate and ETA.
 */
import { formatBytes, formatDurationMs } from '../../common/units.js'

interface ProgressView {
  update(doneBytes: number, totalBytes: number, note?: string): void
  done(line: string): void
}

const WIDTH = 30

export function progressView(label: string, out: (text: string) => void, isTTY: boolean): ProgressView {
  const t0 = performance.now()
  let lastLine = 0
  let lastDecile = -1
  const rate = (bytes: number) => {
    const s = (performance.now() - t0) / 1000
    return s > 0 ? `${(bytes / 1024 / 1024 / s).toFixed(0)} MiB/s` : ''
  }
  /** " ETA 12s" from the average rate so far, once there is one and while the estimate is not reached */
  const eta = (done: number, total: number): string => {
    const s = (performance.now() - t0) / 1000
    if (done <= 0 || total <= done || s < 0.5) return ''
    return ` ETA ${formatDurationMs(((total - done) / (done / s)) * 1000)}`
  }
  return {
    update(doneBytes, totalBytes, note) {
      const ratio = totalBytes > 0 ? Math.min(1, doneBytes / totalBytes) : 0
      const pct = Math.floor(ratio * 100)
      const text = `${formatBytes(doneBytes)}${totalBytes > 0 ? ` / ≈${formatBytes(totalBytes)}` : ''} ${rate(doneBytes)}${eta(doneBytes, totalBytes)}${note === undefined ? '' : ` ${note}`}`
      if (isTTY) {
        const filled = Math.round(ratio * WIDTH)
        out(`\r  ${label} [${'#'.repeat(filled)}${'.'.repeat(WIDTH - filled)}] ${String(pct).padStart(3)}% ${text}\x1b[K`)
        return
      }
      const now = performance.now()
      const decile = Math.floor(pct / 10)
      if (decile !== lastDecile || now - lastLine > 5000) {
        lastDecile = decile
        lastLine = now
        out(`  ${label}: ${pct}% ${text}\n`)
      }
    },
    done(line) {
      out(`${isTTY ? '\r\x1b[K' : ''}  ${label}: ${line}\n`)
    },
  }
}

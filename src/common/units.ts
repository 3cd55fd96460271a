/**
 * Durations and sizes with units, as operators write them in config files and flags (`30s`, `1h30m`,
 * `2GiB`, `512k`). Hand-written: the npm parsers either mix IEC and SI (`bytes` treats `kB` as 1024) or
 * return NaN instead of saying what was wrong; a backup product needs exact IEC/SI units and messages that
 * name the bad value.
 */

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  sec: 1000,
  m: 60_000,
  min: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  tb: 1000 ** 4,
}

/** Parses `1500`, `30s`, `1h30m`, `250ms` into milliseconds; a bare number is milliseconds. */
export function parseDurationMs(input: string | number): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0) throw new RangeError(`expected a non-negative duration, got ${input}`)
    return input
  }
  const text = input.trim().toLowerCase()
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text)
  const re = /(\d+(?:\.\d+)?)\s*([a-z]+)/gy
  let total = 0
  let matched = 0
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const unit = DURATION_UNITS[m[2] ?? '']
    if (unit === undefined) throw new RangeError(`unknown duration unit "${m[2]}" in "${input}" (use ms, s, m, h, d, w)`)
    total += Number(m[1]) * unit
    matched = re.lastIndex
  }
  if (matched === 0 || matched !== text.length) throw new RangeError(`"${input}" is not a duration (examples: 500ms, 30s, 1h30m)`)
  return Math.round(total)
}

/** Parses `4096`, `512k`, `2GiB`, `1.5 MB` into bytes; IEC (KiB=1024) and SI (kB=1000) both exact. */
export function parseSizeBytes(input: string | number): number {
  if (typeof input === 'number') {
    if (!Number.isSafeInteger(input) || input < 0) throw new RangeError(`expected a non-negative whole number of bytes, got ${input}`)
    return input
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(input)
  if (m === null) throw new RangeError(`"${input}" is not a size (examples: 4096, 512KiB, 2GiB, 5MB)`)
  const unit = SIZE_UNITS[(m[2] ?? '').toLowerCase()]
  if (unit === undefined) throw new RangeError(`unknown size unit "${m[2]}" in "${input}" (use B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)`)
  const value = Math.round(Number(m[1]) * unit)
  if (!Number.isSafeInteger(value)) throw new RangeError(`size "${input}" is too large`)
  return value
}

/** 1536 → "1.5 KiB" (for humans; never parsed back). */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let i = 0
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`
}

/** 90500 → "1m30.5s" (for humans). */
export function formatDurationMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`
  const s = ms / 1000
  if (s < 60) return `${s.toFixed(1)}s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m}m${(s - m * 60).toFixed(0)}s`
  return `${Math.floor(m / 60)}h${m % 60}m`
}

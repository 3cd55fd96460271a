/**
 * The dependency rules of docs/architecture.md, checked on the source: every relative import (static,
 * `export ... from`, dynamic `import()`) of every file under src/ is mapped to its area (the first
 * directory under src/; the XAPI simulator is an area of its own) and must be one the importing area
 * may use. Exceptions are listed below, each with its reason; a new one must be added here knowingly.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { describe, expect, it } from 'vitest'

const SRC = join(import.meta.dirname, '../../src')

/** What each area may import besides itself (one way: cli → workers/api → backup → (vhd, remotes, xapi) → common). */
const ALLOWED: Record<string, readonly string[]> = {
  common: [],
  config: ['common'],
  remotes: ['common'],
  xapi: ['common'],
  /** XVA (XAPI's VM archive): tar, checksums, compression, and its XAPI HTTP transfer descriptors */
  xva: ['common', 'xapi'],
  /** VHD sinks write to the remote contract */
  vhd: ['common', 'remotes'],
  /** the contract both sides share: tasks carry remote URLs (parsed and checked there) and config defaults */
  queue: ['common', 'config', 'remotes'],
  /** attached from outside the engine; knows the remote event types it turns into metrics */
  metrics: ['common', 'remotes', '(root)'],
  backup: ['common', 'config', 'queue', 'remotes', 'vhd', 'xapi', 'xva'],
  api: ['common', 'config', 'queue', 'remotes', 'backup', '(root)'],
  workers: ['common', 'config', 'queue', 'remotes', 'backup', 'metrics', 'api', '(root)'],
  'xapi/sim': ['common', 'xapi', 'xva'],
  cli: ['common', 'config', 'queue', 'remotes', 'vhd', 'xapi', 'xva', 'xapi/sim', 'backup', 'metrics', 'api', 'workers', '(root)'],
  '(root)': ['common', 'queue'],
}

/** Imports that break the table, each on purpose. `from` is a path under src/, `to` an area. */
const EXCEPTIONS: readonly { from: string; to: string; reason: string }[] = [
  {
    from: 'backup/thread-metrics.ts',
    to: 'metrics',
    reason: 'the engine’s thread edge: the thread tasks (disk, XVA, mirror copy) turn their remotes’ events into metric deltas here (the runner’s thread has no remote to attach to)',
  },
  { from: 'xapi/sim/import.ts', to: 'vhd', reason: 'the simulator plays XAPI, which parses the VHD a restore uploads' },
  { from: 'xapi/sim/vhd-encoder.ts', to: 'vhd', reason: 'the simulator encodes its exports with the engine’s CHS geometry (one calculation)' },
]

function areaOf(file: string): string {
  const parts = relative(SRC, file).split('/')
  if (parts.length === 1) return '(root)'
  if (parts[0] === 'xapi' && parts[1] === 'sim') return 'xapi/sim'
  return parts[0] as string
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name)
    return e.isDirectory() ? sources(p) : e.name.endsWith('.ts') ? [p] : []
  })
}

function relativeImports(text: string): string[] {
  const out: string[] = []
  for (const m of text.matchAll(/^\s*(?:import|export)\b[^;'"]*?from\s*'(\.[^']*)'/gms)) out.push(m[1] as string)
  for (const m of text.matchAll(/^\s*import\s*'(\.[^']*)'/gm)) out.push(m[1] as string)
  for (const m of text.matchAll(/\bimport\(\s*'(\.[^']*)'\s*\)/g)) out.push(m[1] as string)
  return out
}

/** Every import edge that crosses areas: importing file (under src/), imported area. */
function crossings(): { from: string; fromArea: string; to: string }[] {
  const out: { from: string; fromArea: string; to: string }[] = []
  for (const file of sources(SRC)) {
    const fromArea = areaOf(file)
    for (const spec of relativeImports(readFileSync(file, 'utf8'))) {
      const target = normalize(join(dirname(file), spec))
      const to = areaOf(target)
      if (to !== fromArea) out.push({ from: relative(SRC, file), fromArea, to })
    }
  }
  return out
}

describe('architecture: dependencies run one way', () => {
  const edges = crossings()

  it('finds the imports it checks', () => {
    expect(edges.length).toBeGreaterThan(100)
    expect(edges).toContainEqual({ from: 'backup/run.ts', fromArea: 'backup', to: 'remotes' })
  })

  it('every area imports only what docs/architecture.md allows (exceptions listed with a reason)', () => {
    const broken = edges.filter((e) => {
      const allowed = ALLOWED[e.fromArea]
      if (allowed === undefined) return true // a new area must be placed in the table
      if (allowed.includes(e.to)) return false
      return !EXCEPTIONS.some((x) => x.from === e.from && x.to === e.to)
    })
    expect(broken.map((e) => `${e.from} (${e.fromArea}) imports ${e.to}`)).toEqual([])
  })

  it('every listed exception is still needed', () => {
    const unused = EXCEPTIONS.filter((x) => !edges.some((e) => e.from === x.from && e.to === x.to))
    expect(unused.map((x) => x.from)).toEqual([])
  })

  it('the engine never imports the runner, the API or the CLI', () => {
    const upward = edges.filter((e) => ['backup', 'vhd', 'remotes', 'xapi', 'common', 'queue'].includes(e.fromArea) && ['workers', 'api', 'cli'].includes(e.to))
    expect(upward.map((e) => `${e.from} imports ${e.to}`)).toEqual([])
  })
})

/**
 * `npm run bench`: runs every bench/*.bench.ts (or those named as arguments), prints one table with
 * MiB/s, ratio to the baseline measured in the same run, CPU s/GiB and peak RSS, and writes the
 * results to BENCHMARKS.md (and bench/results/latest.json).
 *
 *   npm run bench                    # all files, default sizes
 *   npm run bench -- vhd remotes     # files whose name contains one of the words
 *   BENCH_SCALE=4 npm run bench      # 4x the default sizes
 */
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cpuPerGiB, mibps, type BenchFile, type BenchRow } from './lib.js'

const here = new URL('.', import.meta.url).pathname
const filters = process.argv.slice(2)
const scale = Number(process.env.BENCH_SCALE ?? '1')
const files = (await readdir(here)).filter((f) => f.endsWith('.bench.ts') && (filters.length === 0 || filters.some((w) => f.includes(w)))).sort()
const scratchRoot = existsSync('/dev/shm') ? '/dev/shm' : tmpdir()

const rows: BenchRow[] = []
for (const file of files) {
  const dir = await mkdtemp(join(scratchRoot, 'bp-bench-'))
  console.log(`\n## ${file}`)
  try {
    const mod = (await import(join(here, file))) as { default: BenchFile }
    const result = await mod.default({ scale, tmpDir: dir, log: (l) => console.log(`  ${l}`) })
    rows.push(...result)
    for (const r of result) console.log(`  ${format(r, result)}`)
  } catch (error) {
    console.error(`  FAILED: ${(error as Error).stack ?? String(error)}`)
    process.exitCode = 1
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** Speed of `r` relative to its baseline: MiB/s ratio, or inverse time ratio for rows without bytes. */
function ratioTo(r: BenchRow, base: BenchRow): number {
  return r.bytes > 0 && base.bytes > 0 ? mibps(r) / mibps(base) : base.seconds / r.seconds
}

function format(r: BenchRow, all: BenchRow[]): string {
  const base = r.baseline === undefined ? undefined : all.find((b) => b.group === r.group && b.name === r.baseline)
  const ratio = base === undefined ? '' : ` ${ratioTo(r, base).toFixed(2)}x ${base.name}`
  const extra = r.extra === undefined ? '' : ' ' + Object.entries(r.extra).map(([k, v]) => `${k}=${typeof v === 'number' ? v.toFixed(2) : v}`).join(' ')
  return `${r.group} / ${r.name}: ${r.bytes > 0 ? `${mibps(r).toFixed(0)} MiB/s, ${cpuPerGiB(r).toFixed(2)} CPU s/GiB` : `${r.seconds.toFixed(2)} s`}${r.peakRssMiB === undefined ? '' : `, peak RSS ${r.peakRssMiB.toFixed(0)} MiB`}${ratio}${extra}`
}

function table(all: BenchRow[]): string {
  const lines = ['| group | case | MiB/s | vs baseline | CPU s/GiB | peak RSS MiB | extra |', '|---|---|---:|---|---:|---:|---|']
  for (const r of all) {
    const base = r.baseline === undefined ? undefined : all.find((b) => b.group === r.group && b.name === r.baseline)
    lines.push(
      `| ${r.group} | ${r.name} | ${r.bytes > 0 ? mibps(r).toFixed(0) : '-'} | ${base === undefined ? '' : `${ratioTo(r, base).toFixed(2)}x ${base.name}`} | ${r.bytes > 0 ? cpuPerGiB(r).toFixed(2) : '-'} | ${r.peakRssMiB?.toFixed(0) ?? ''} | ${r.extra === undefined ? '' : Object.entries(r.extra).map(([k, v]) => `${k}=${typeof v === 'number' ? v.toFixed(2) : v}`).join(' ')} |`,
    )
  }
  return lines.join('\n')
}

if (rows.length > 0 && filters.length === 0) {
  await mkdir(join(here, 'results'), { recursive: true })
  await writeFile(join(here, 'results', 'latest.json'), JSON.stringify(rows, null, 2))
  const header = `# Benchmarks\n\nWritten by \`npm run bench\` (BENCH_SCALE=${scale}) on ${new Date().toISOString()}, ${process.version}, 2 cores.\nEach ratio compares with a baseline measured in the same run.\n\n`
  await writeFile(join(here, '..', 'BENCHMARKS.md'), header + table(rows) + '\n')
}

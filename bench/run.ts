/**
 * `npm run bench`: runs every bench/*.bench.ts (or those named as arguments), prints one table with
 * MiB/s, ratio to the baseline measured in the same run, CPU s/GiB and peak RSS, and writes the
 * results to BENCHMARKS.md (and bench/results/latest.json).
 *
 *   npm run bench                    # all files, default sizes
 *   npm run bench -- vhd remotes     # files whose name contains one of the words
 *   BENCH_SCALE=4 npm run bench      # 4x the default sizes
 */
import { spawn } from 'node:child_process'
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cpuPerGiB, mibps, type BenchFile, type BenchRow } from './lib.js'
import { applyGcTuning } from '../src/common/gc-tuning.js'

const here = new URL('.', import.meta.url).pathname
const filters = process.argv.slice(2)
const scale = Number(process.env.BENCH_SCALE ?? '1')
const files = (await readdir(here)).filter((f) => f.endsWith('.bench.ts') && (filters.length === 0 || filters.some((w) => f.includes(w)))).sort()
const scratchRoot = existsSync('/dev/shm') ? '/dev/shm' : tmpdir()

/**
 * Each bench file runs in its own Node process (this script re-invoked with BENCH_CHILD=<file>), so a
 * file's peak RSS is its own high-water mark and not the largest of every file run before it.
 */
async function runFile(file: string): Promise<BenchRow[]> {
  const dir = await mkdtemp(join(scratchRoot, 'bp-bench-'))
  try {
    const mod = (await import(join(here, file))) as { default: BenchFile }
    return await mod.default({ scale, tmpDir: dir, log: (l) => console.log(`  ${l}`) })
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

const child = process.env.BENCH_CHILD
if (child !== undefined) {
  applyGcTuning() // the process settings of the product (src/cli/main.ts)
  const result = await runFile(child)
  await writeFile(process.env.BENCH_CHILD_OUT!, JSON.stringify(result))
  process.exit(0)
}

const rows: BenchRow[] = []
for (const file of files) {
  console.log(`\n## ${file}`)
  const outDir = await mkdtemp(join(tmpdir(), 'bp-bench-out-'))
  const out = join(outDir, 'rows.json')
  try {
    const code = await new Promise<number | null>((resolve) => {
      const p = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url)], {
        stdio: 'inherit',
        env: { ...process.env, BENCH_CHILD: file, BENCH_CHILD_OUT: out },
      })
      p.on('exit', resolve)
    })
    if (code !== 0) throw new Error(`${file} exited with code ${code}`)
    const result = JSON.parse(await readFile(out, 'utf8')) as BenchRow[]
    rows.push(...result)
    for (const r of result) console.log(`  ${format(r, result)}`)
  } catch (error) {
    console.error(`  FAILED: ${(error as Error).stack ?? String(error)}`)
    process.exitCode = 1
  } finally {
    await rm(outDir, { recursive: true, force: true })
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

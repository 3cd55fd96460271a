/**
 * CPU cost of starting the compiled CLI (`node bin/backup-proxy.js` after `npm run build`; built here
 * when dist/ is missing) for `--help`, `status` and `jobs` against a private redis-server with one
 * live-looking queue, each the median of 5 runs, against the baseline of Node starting with nothing to
 * do (`node -e 0`) measured in the same run. The target is < 0.3 s CPU for `--help` and `status`.
 */
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { startRedis } from '../test/services/redis.js'
import { runCommand, type BenchFile, type BenchRow } from './lib.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const RUNS = 5

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

const bench: BenchFile = async ({ log }) => {
  if (!existsSync(`${root}/dist/cli/main.js`)) {
    log('dist/ missing: npm run build')
    await runCommand(`cd '${root}' && npm run build`)
  }
  const redis = await startRedis()
  const env = { ...process.env, REDIS_URL: redis.url, BACKUP_PROXY_LOG_LEVEL: 'silent' }
  try {
    const node = `'${process.execPath}'`
    const cases: [string, string][] = [
      ['node -e 0', `${node} -e 0`],
      ['--help', `${node} bin/backup-proxy.js --help`],
      ['status', `${node} bin/backup-proxy.js status`],
      ['jobs', `${node} bin/backup-proxy.js jobs`],
    ]
    const rows: BenchRow[] = []
    for (const [name, command] of cases) {
      const runs = []
      for (let i = 0; i < RUNS; i++) runs.push(await runCommand(`cd '${root}' && ${command} > /dev/null`, { env }))
      const cpu = median(runs.map((r) => r.cpuSeconds))
      log(`${name}: ${cpu.toFixed(2)} s CPU (median of ${RUNS}), ${median(runs.map((r) => r.seconds)).toFixed(2)} s wall`)
      rows.push({
        group: 'cli start',
        name,
        bytes: 0,
        seconds: median(runs.map((r) => r.seconds)),
        cpuSeconds: cpu,
        peakRssMiB: median(runs.map((r) => r.peakRssMiB)),
        ...(name === 'node -e 0' ? {} : { baseline: 'node -e 0' }),
        extra: { cpuS: cpu },
      })
    }
    return rows
  } finally {
    await redis.destroy()
  }
}

export default bench

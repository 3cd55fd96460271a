/**
 * CPU cost of starting the compiled CLI (`node bin/backup-proxy.js` after `npm run build`; built here
 * when dist/ is missing) for `--help`, `status` and `jobs`, against the baseline of Node starting with
 * nothing to do (`node -e 0`) measured in the same run. Redis is a private redis-server holding what a
 * proxy's Redis holds: a live-looking proxy heartbeat and one queue with a few jobs (enqueued with
 * `backup --no-wait --allow-no-proxy`), so `status` and `jobs` have rows to show. The cases run in
 * turn, RUNS rounds, so a change in the machine's load weighs on every case alike; each figure is the
 * median. The target is < 0.3 s CPU for `--help` and `status` (issue 19), and `jobs` too (it reads Redis
 * as `status` does, without BullMQ). On a Node with a module compile cache (>= 22.1, bin/backup-proxy.js)
 * the cache is in this run's temporary directory (XDG_CACHE_HOME): the first round fills it, the medians
 * are of runs that use it, as an operator's second command does.
 */
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { writeHeartbeat } from '../src/queue/registry.js'
import { SealKey } from '../src/queue/seal.js'
import { startRedis } from '../test/services/redis.js'
import { runCommand, type BenchFile, type BenchRow } from './lib.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const RUNS = 7
const JOBS = 5
const TARGET_CPU_S = 0.3

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

/** A heartbeat of proxy `bench` serving its queue, fresh (status lists proxies seen in the last 15 s). */
async function beat(redis: Redis): Promise<void> {
  const now = Date.now()
  await writeHeartbeat(redis, 'bull', {
    instance: 'bench@host:1', proxyId: 'bench', pools: [], queues: ['{proxy.bench}'], host: 'host', pid: 1, version: 'bench',
    startedAt: now, at: now, threads: 2, busyThreads: 0, queuedStreams: 0, concurrency: 2, activeJobs: 0, jobs: [], state: 'running',
  })
}

const bench: BenchFile = async ({ log, tmpDir }) => {
  if (!existsSync(`${root}/dist/cli/main.js`)) {
    log('dist/ missing: npm run build')
    await runCommand(`cd '${root}' && npm run build`)
  }
  const server = await startRedis()
  const redis = new Redis(server.url)
  const env = { ...process.env, XDG_CACHE_HOME: tmpDir, REDIS_URL: server.url, BACKUP_PROXY_LOG_LEVEL: 'silent', BACKUP_PROXY_SECURITY_SEAL_KEY: SealKey.generate().export() }
  try {
    const node = `'${process.execPath}'`
    const passwordFile = join(tmpDir, 'xapi.pw')
    await writeFile(passwordFile, 'bench\n')
    for (let i = 0; i < JOBS; i++) {
      const vm = `00000000-0000-4000-8000-00000000000${i}`
      await runCommand(`cd '${root}' && ${node} bin/backup-proxy.js backup --proxy bench --xapi https://root@127.0.0.1:9 --xapi-password-file '${passwordFile}' --vm ${vm} --remote file://${tmpDir}/r --job-id bench-${i} --no-wait --allow-no-proxy > /dev/null`, { env })
    }
    const cases: [string, string][] = [
      ['node -e 0', `${node} -e 0`],
      ['--help', `${node} bin/backup-proxy.js --help`],
      ['status', `${node} bin/backup-proxy.js status`],
      ['jobs', `${node} bin/backup-proxy.js jobs`],
    ]
    const runs = new Map<string, { seconds: number; cpuSeconds: number; peakRssMiB: number }[]>(cases.map(([name]) => [name, []]))
    for (let round = 0; round < RUNS; round++) {
      for (const [name, command] of cases) {
        if (name === 'status') await beat(redis)
        runs.get(name)!.push(await runCommand(`cd '${root}' && ${command} > /dev/null`, { env }))
      }
    }
    const nodeCpu = median(runs.get('node -e 0')!.map((r) => r.cpuSeconds))
    const rows: BenchRow[] = []
    for (const [name] of cases) {
      const r = runs.get(name)!
      const cpu = median(r.map((x) => x.cpuSeconds))
      const target = name !== 'node -e 0' ? `, target < ${TARGET_CPU_S} s: ${cpu < TARGET_CPU_S ? 'met' : 'MISSED'}` : ''
      log(`${name}: ${cpu.toFixed(2)} s CPU (median of ${RUNS}), ${(cpu - nodeCpu).toFixed(2)} s over node -e 0, ${median(r.map((x) => x.seconds)).toFixed(2)} s wall${target}`)
      rows.push({
        group: 'cli start (CPU s, compiled)',
        name,
        bytes: 0,
        seconds: median(r.map((x) => x.seconds)),
        cpuSeconds: cpu,
        peakRssMiB: median(r.map((x) => x.peakRssMiB)),
        ...(name === 'node -e 0' ? {} : { baseline: 'node -e 0' }),
        extra: { cpuS: cpu, ...(name === 'node -e 0' ? {} : { overNodeCpuS: cpu - nodeCpu }) },
      })
    }
    return rows
  } finally {
    redis.disconnect()
    await server.destroy()
  }
}

export default bench

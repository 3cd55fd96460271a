/**
 * The CLI loads only what a command needs: walking the static (non-type) imports from src/cli/main.ts
 * and from the module of each command (program.ts imports only the one a run names), none of the heavy
 * libraries (BullMQ, the AWS SDK, Piscina, xen-api, pino, zod, ioredis) is reached: each command imports them with `await import()` when it runs, so `--help` pays for none of them. And
 * run for real (a child process listing the CommonJS packages it loaded): `--help` loads none of them,
 * `status`, `jobs` and `job show|logs` (over a queue holding a job) ioredis but not BullMQ (at most its
 * QueueKeys module, for key names) nor pino; `backups ls` of a local remote none of the other remotes' packages. The CPU figures are measured by `npm run bench -- cli`.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync, existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { describe, expect, inject, it } from 'vitest'
import { rememberQueue } from '../../src/queue/registry.js'
import { useTempDir } from '../helpers/tmp.js'

const HEAVY = ['bullmq', '@aws-sdk/', 'piscina', 'xen-api', 'pino', 'zod', 'ioredis', 'yaml', 'prom-client']
const root = new URL('../../src/', import.meta.url).pathname

/** Static imports of a module (`import x from`, `import { } from`, `export ... from`), not `import type`. */
function staticImports(file: string): string[] {
  const text = readFileSync(file, 'utf8')
  const out: string[] = []
  for (const m of text.matchAll(/^(?:import|export)\s+(?!type\b)[^'";]*?from\s+'([^']+)'|^import\s+'([^']+)'/gm)) out.push((m[1] ?? m[2])!)
  return out
}

function reachable(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>()
  const packages = new Set<string>()
  const visit = (file: string) => {
    if (files.has(file)) return
    files.add(file)
    for (const spec of staticImports(file)) {
      if (spec.startsWith('.')) {
        const ts = resolve(dirname(file), spec.replace(/\.js$/, '.ts'))
        if (existsSync(ts)) visit(ts)
      } else if (!spec.startsWith('node:')) packages.add(spec)
    }
  }
  visit(entry)
  return { files, packages }
}

describe('lazy loading', () => {
  it('the walker sees static imports and ignores type-only ones', () => {
    expect(staticImports(join(root, 'cli/commands/backup-run.ts'))).toContain('../../queue/registry.js')
    expect(staticImports(join(root, 'cli/commands/backup-run.ts'))).not.toContain('../../queue/client.js')
    expect([...reachable(join(root, 'workers/proxy.ts')).packages]).toContain('bullmq')
  })

  it('no heavy library is imported statically from the CLI entry point, nor from the module of any command', () => {
    // program.ts loads the module of the command a run names (all of them for --help): each is an entry too
    const commands = [...readFileSync(join(root, 'cli/program.ts'), 'utf8').matchAll(/import\('(\.\/commands\/[^']+)'\)/g)].map((m) => resolve(root, 'cli', m[1]!.replace(/\.js$/, '.ts')))
    expect(commands.length).toBeGreaterThanOrEqual(14)
    for (const entry of [join(root, 'cli/main.ts'), ...commands]) {
      const { files, packages } = reachable(entry)
      expect(files.size, entry).toBeGreaterThan(1)
      expect([...packages].filter((p) => HEAVY.some((h) => p === h || p.startsWith(h))), entry).toEqual([])
    }
  })

  const tmp = useTempDir('bp-cli-lazy-')
  const prefix = `bp-lazy-${randomBytes(4).toString('hex')}`

  /** The CommonJS modules a CLI run loaded (Node's require cache at exit), and their packages. */
  async function loaded(args: string[]): Promise<{ files: string[]; packages: Set<string>; stdout: string }> {
    const recorder = join(tmp(), 'recorder.cjs')
    await writeFile(recorder, `process.on('exit', () => process.stderr.write('LOADED ' + JSON.stringify(Object.keys(require('module')._cache)) + '\\n'))\n`)
    const main = new URL('../../src/cli/main.ts', import.meta.url).pathname
    const env = { ...process.env, REDIS_URL: inject('redisUrl'), BACKUP_PROXY_REDIS_PREFIX: prefix, BACKUP_PROXY_LOG_LEVEL: 'silent' }
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ['--require', recorder, '--import', 'tsx', main, ...args], { env })
    const files = JSON.parse(/^LOADED (.*)$/m.exec(stderr)![1]!) as string[]
    return { stdout, files, packages: new Set(files.flatMap((f) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(f)?.[1] ?? [])) }
  }

  it('run for real, backups ls of a local remote loads none of the NFS, SMB and S3 code (its packages)', async () => {
    const { packages, stdout } = await loaded(['backups', 'ls', `file://${tmp()}`])
    expect(stdout).toBe('no backup\n')
    expect([...packages].filter((p) => p.startsWith('@jsonjoy.com/') || p.startsWith('@aws-sdk/') || HEAVY.includes(p))).toEqual([])
  })

  it('run for real, --help loads no heavy package, status, jobs and job show|logs load ioredis but neither BullMQ nor pino', async () => {
    const help = (await loaded(['--help'])).packages
    expect(help.has('commander')).toBe(true)
    expect([...help].filter((p) => HEAVY.some((h) => p === h || p.startsWith(h)))).toEqual([])
    // a queue with a job, as a client leaves it (BullMQ loads in this process, not in the CLI's)
    const redis = new Redis(inject('redisUrl'), { maxRetriesPerRequest: null })
    const queue = new Queue('{proxy.lazy}', { prefix, connection: redis.duplicate() })
    await rememberQueue(redis, prefix, queue.name)
    await queue.add('backup.run', { v: 1, task: {} }, { jobId: 'lazy-job' })
    try {
      for (const command of [['status'], ['jobs'], ['jobs', '--state', 'failure', '--json'], ['job', 'show', 'lazy-job'], ['job', 'logs', 'lazy-job']]) {
        const { files, packages, stdout } = await loaded(command)
        expect(stdout, command.join(' ')).toContain(command[0] === 'status' ? '{proxy.lazy}' : command.includes('--state') ? '[]' : command.includes('logs') ? 'no task-log event yet' : 'lazy-job')
        expect(packages.has('ioredis'), command.join(' ')).toBe(true)
        // of BullMQ at most its QueueKeys module (BullMQ's index loads ~170 modules and semver, cron-parser, msgpackr)
        expect(files.filter((f) => f.includes('/node_modules/bullmq/') && !f.endsWith('/bullmq/dist/cjs/classes/queue-keys.js')), command.join(' ')).toEqual([])
        expect([...packages].filter((p) => ['pino', 'piscina', 'xen-api', 'prom-client', 'semver', 'cron-parser', 'msgpackr'].includes(p) || p.startsWith('@aws-sdk/')), command.join(' ')).toEqual([])
      }
    } finally {
      await queue.obliterate({ force: true })
      await redis.del(`${prefix}:{bp}:queues`)
      await queue.close()
      redis.disconnect()
    }
  })
})

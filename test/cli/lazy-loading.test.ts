/**
 * The CLI loads only what a command needs: walking the static (non-type) imports from src/cli/main.ts,
 * none of the heavy libraries (BullMQ, the AWS SDK, Piscina, xen-api, pino, zod, ioredis) is reached:
 * each command imports them with `await import()` when it runs, so `--help` pays for none of them. And
 * run for real (a child process listing the CommonJS packages it loaded): `--help` loads none of them,
 * `status` ioredis but not BullMQ (at most its QueueKeys module, for key names) nor pino. The CPU figures are measured by `npm run bench -- cli`.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync, existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, inject, it } from 'vitest'
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

  it('no heavy library is imported statically from the CLI entry point', () => {
    const { files, packages } = reachable(join(root, 'cli/main.ts'))
    expect(files.size).toBeGreaterThan(10)
    expect([...packages].filter((p) => HEAVY.some((h) => p === h || p.startsWith(h)))).toEqual([])
  })

  const tmp = useTempDir('bp-cli-lazy-')

  /** The CommonJS modules a CLI run loaded (Node's require cache at exit), and their packages. */
  async function loaded(args: string[]): Promise<{ files: string[]; packages: Set<string> }> {
    const recorder = join(tmp(), 'recorder.cjs')
    await writeFile(recorder, `process.on('exit', () => process.stderr.write('LOADED ' + JSON.stringify(Object.keys(require('module')._cache)) + '\\n'))\n`)
    const main = new URL('../../src/cli/main.ts', import.meta.url).pathname
    const env = { ...process.env, REDIS_URL: inject('redisUrl'), BACKUP_PROXY_REDIS_PREFIX: `bp-lazy-${randomBytes(4).toString('hex')}`, BACKUP_PROXY_LOG_LEVEL: 'silent' }
    const { stderr } = await promisify(execFile)(process.execPath, ['--require', recorder, '--import', 'tsx', main, ...args], { env })
    const files = JSON.parse(/^LOADED (.*)$/m.exec(stderr)![1]!) as string[]
    return { files, packages: new Set(files.flatMap((f) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(f)?.[1] ?? [])) }
  }

  it('run for real, --help loads no heavy package and status loads ioredis but neither BullMQ nor pino', async () => {
    const help = (await loaded(['--help'])).packages
    expect(help.has('commander')).toBe(true)
    expect([...help].filter((p) => HEAVY.some((h) => p === h || p.startsWith(h)))).toEqual([])
    const { files, packages: status } = await loaded(['status'])
    expect(status.has('ioredis')).toBe(true)
    // of BullMQ at most its QueueKeys module (BullMQ's index loads ~170 modules and semver, cron-parser, msgpackr)
    expect(files.filter((f) => f.includes('/node_modules/bullmq/') && !f.endsWith('/bullmq/dist/cjs/classes/queue-keys.js'))).toEqual([])
    expect([...status].filter((p) => ['pino', 'piscina', 'xen-api', 'prom-client', 'semver', 'cron-parser', 'msgpackr'].includes(p) || p.startsWith('@aws-sdk/'))).toEqual([])
  })
})

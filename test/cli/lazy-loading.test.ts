/**
 * The CLI loads only what a command needs: walking the static (non-type) imports from src/cli/main.ts,
 * none of the heavy libraries (BullMQ, the AWS SDK, Piscina, xen-api, pino, zod, ioredis) is reached:
 * each command imports them with `await import()` when it runs, so `--help` pays for none of them. The
 * CPU figures are measured by `npm run bench -- cli`.
 */
import { readFileSync, existsSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'

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
})

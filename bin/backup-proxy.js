#!/usr/bin/env node
// Runs the compiled CLI when built (npm run build), else the TypeScript sources through tsx.
import { existsSync } from 'node:fs'
import module from 'node:module'
import { homedir } from 'node:os'
import { join } from 'node:path'

/**
 * Node's module compile cache (module.enableCompileCache, Node >= 22.1; Node 20 has none and this does
 * nothing): V8's compiled code of every module the CLI loads is kept on disk, so a command started
 * again skips compiling them (`status` ~0.03 s CPU less with Node 24, BENCHMARKS.md CLI start). The
 * cache is per user, in $XDG_CACHE_HOME/backup-proxy/node-compile-cache (~/.cache/... when unset), not
 * in the shared temporary directory Node would pick by default; NODE_COMPILE_CACHE=<dir> puts it
 * elsewhere and NODE_DISABLE_COMPILE_CACHE=1 turns it off (both read by Node itself). A directory that
 * cannot be written (a read-only home, systemd's ProtectHome) only means no cache: Node reports it in
 * the returned status, never as an error.
 */
function enableCompileCache() {
  if (typeof module.enableCompileCache !== 'function') return
  const dir = process.env.NODE_COMPILE_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'backup-proxy', 'node-compile-cache')
  try {
    module.enableCompileCache(dir)
  } catch {
    // no cache: the command runs the same, only compiles its modules again
  }
}

const dist = new URL('../dist/cli/main.js', import.meta.url)
if (existsSync(dist)) {
  enableCompileCache()
  await import(dist.href)
} else {
  const { register } = await import('tsx/esm/api')
  register()
  await import(new URL('../src/cli/main.ts', import.meta.url).href)
}

/**
 * BullMQ and ioredis, loaded with require() on first use.
 *
 * Both are CommonJS packages. An ES module importing one makes Node's ESM loader analyse the package's
 * sources for their named exports, which costs about as much as loading it: with Node 20, `import` of
 * BullMQ took ~0.2 s CPU against ~0.1 s for require(), ioredis ~0.09 s against ~0.05 s. The CLI must
 * start a command like `status` or `jobs` in a fraction of a second (BENCHMARKS.md, CLI start), so the
 * modules that use these packages take them from here; `import type` still gives the types. require()
 * shares Node's module cache with `import`, so a class is the same object whichever way it was loaded.
 *
 * Each module is required once and kept: a require() of a package name resolves the name again on every
 * call (package.json reads, and tsx's resolver when running from sources). The job runner asks for
 * BullMQ's key names on every job (names.ts bullKeys): with a require() per call, ~16 µs of CPU per job
 * in the no-op jobs bench (docs/queue.md, Measured).
 */
import { createRequire } from 'node:module'

const load = createRequire(import.meta.url)

let bullmqModule: typeof import('bullmq') | undefined
let queueKeysClass: typeof import('bullmq').QueueKeys | undefined
let ioredisModule: typeof import('ioredis') | undefined

export function bullmq(): typeof import('bullmq') {
  return (bullmqModule ??= load('bullmq') as typeof import('bullmq'))
}

/**
 * BullMQ's QueueKeys (the names of a queue's keys) from its own module file: `status` reads BullMQ's
 * keys with plain Redis commands and must not load the ~200 modules of BullMQ for their names.
 */
export function bullmqQueueKeys(): typeof import('bullmq').QueueKeys {
  return (queueKeysClass ??= (load('bullmq/dist/cjs/classes/queue-keys.js') as { QueueKeys: typeof import('bullmq').QueueKeys }).QueueKeys)
}

export function ioredis(): typeof import('ioredis') {
  return (ioredisModule ??= load('ioredis') as typeof import('ioredis'))
}

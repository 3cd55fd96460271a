/**
 * STAND-IN thread task (tests only): the npm packages this thread has loaded as CommonJS modules, read
 * from Node's own module registry (the require cache, one per thread). How a test sees what a stream
 * thread loaded: e.g. that a thread which only used local remotes never loaded the AWS SDK (a CommonJS
 * package, loaded on first use by the S3 remote: src/remotes/s3-sdk.ts).
 */
import { createRequire } from 'node:module'
import type { ThreadTaskContext } from '../thread-task.js'

const NODE_MODULES = /[\\/]node_modules[\\/]/g

/** `@scope/name` or `name` of the package a module file belongs to (its innermost node_modules). */
function packageOf(file: string): string | undefined {
  let rest: string | undefined
  for (const m of file.matchAll(NODE_MODULES)) rest = file.slice(m.index + m[0].length)
  if (rest === undefined) return undefined
  const parts = rest.split(/[\\/]/)
  return parts[0]?.startsWith('@') === true ? `${parts[0]}/${parts[1]}` : parts[0]
}

// eslint-disable-next-line @typescript-eslint/require-await -- a thread task is async by contract
export default async function loadedPackages(_input: Record<string, never>, ctx: ThreadTaskContext): Promise<{ packages: string[]; threadId: number }> {
  const packages = new Set<string>()
  for (const file of Object.keys(createRequire(import.meta.url).cache)) {
    const name = packageOf(file)
    if (name !== undefined) packages.add(name)
  }
  return { packages: [...packages].sort(), threadId: ctx.threadId }
}

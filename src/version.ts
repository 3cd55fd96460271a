/** Version of backup-proxy, read once from package.json (works from src/ and dist/). */
import { readFileSync } from 'node:fs'

function readVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown }
  return typeof pkg.version === 'string' ? pkg.version : '0.0.0'
}

export const VERSION: string = readVersion()

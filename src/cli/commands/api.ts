/**
 * `backup-proxy api token`: makes the token Xen Orchestra authenticates with. The token is printed once
 * on stdout (give it to XO when registering this proxy) and never stored: only its scrypt hash is, in the
 * file given with `--hash-file` (mode 0600, point `api.tokenHashFile` at it) or, without it, printed on
 * stderr for `api.tokenHash`. `--stdin` hashes a token of your own (one line on stdin) instead of
 * making one, e.g. the token XO generated when you registered the proxy.
 */
import { chmod, writeFile, rename } from 'node:fs/promises'
import type { Command } from 'commander'
import { UsageError } from '../../common/errors.js'
import type { CliIo } from '../context.js'

interface TokenFlags {
  hashFile?: string
  stdin?: boolean
}

async function readStdinLine(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer)
    if (Buffer.concat(chunks).length > 4096) throw new UsageError('--stdin: the token is longer than 4096 bytes')
  }
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0]?.trim() ?? ''
}

/** Writes the hash atomically with mode 0600. */
async function writeHashFile(path: string, hash: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`
  await writeFile(tmp, `${hash}\n`, { mode: 0o600 })
  await chmod(tmp, 0o600)
  await rename(tmp, path)
}

export async function makeApiToken(flags: TokenFlags, io: CliIo, readToken: () => Promise<string> = readStdinLine): Promise<void> {
  const { generateToken, hashToken } = await import('../../api/token.js')
  const token = flags.stdin === true ? await readToken() : generateToken()
  if (token.length < 16) throw new UsageError('--stdin: the token must be at least 16 characters (better: let `api token` make one)')
  const hash = await hashToken(token)
  if (flags.hashFile !== undefined) {
    await writeHashFile(flags.hashFile, hash)
    io.stderr(`token hash written to ${flags.hashFile}; set api.tokenHashFile to it (env BACKUP_PROXY_API_TOKEN_HASH_FILE) and restart serve\n`)
  } else {
    io.stderr(`set api.tokenHash (env BACKUP_PROXY_API_TOKEN_HASH) to:\n${hash}\n`)
  }
  if (flags.stdin !== true) {
    io.stderr('the token below is shown once and stored nowhere: register this proxy in Xen Orchestra with it\n')
    io.stdout(`${token}\n`)
  }
}

export function registerApi(program: Command, io: CliIo): void {
  const api = program.command('api').description('the xo-proxy API that Xen Orchestra drives this proxy with')
  api
    .command('token')
    .description('make the API token (printed once) and its hash (what the proxy stores)')
    .option('--hash-file <file>', 'write the hash to this file (mode 0600) for api.tokenHashFile')
    .option('--stdin', 'hash a token read from stdin instead of making one')
    .action(async (flags: TokenFlags) => {
      await makeApiToken(flags, io)
    })
}

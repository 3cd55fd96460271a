/**
 * The encryption key of a remote on the command line: from `--encryption-key-file <path>` (the file's
 * content, one trailing newline dropped) or the environment variable BACKUP_PROXY_ENCRYPTION_KEY; the
 * file wins over the environment. Never from argv, where `ps` and shell history would show it: the old
 * `--encryption-key <key>` flag and a remote URL carrying `encryptionKey=` are refused (exit 2). The key
 * is never printed, not even in an error.
 */
import { readFile } from 'node:fs/promises'
import { Option, type Command } from 'commander'
import { UsageError } from '../common/errors.js'
import { parseRemoteUrl } from '../remotes/url.js'

export const ENCRYPTION_KEY_ENV = 'BACKUP_PROXY_ENCRYPTION_KEY'

export interface EncryptionKeyFlags {
  encryptionKeyFile?: string
  /** the refused argv form, declared only to answer it with a precise message */
  encryptionKey?: string
}

/** Adds `--encryption-key-file` (and the hidden, refused `--encryption-key`) to a command. */
export function encryptionKeyOptions(cmd: Command): Command {
  return cmd
    .option('--encryption-key-file <path>', `the remote is encrypted with the key in this file (or env ${ENCRYPTION_KEY_ENV})`)
    .addOption(new Option('--encryption-key <key>').hideHelp())
}

/** Refuses a key on argv: the old flag, or a remote URL whose query carries `encryptionKey`. */
export function refuseKeyInArgv(flags: EncryptionKeyFlags, urls: readonly string[]): void {
  const how = `give it in a file (--encryption-key-file <path>) or in the environment (${ENCRYPTION_KEY_ENV})`
  if (flags.encryptionKey !== undefined) throw new UsageError(`--encryption-key is refused: a key on the command line is visible to every user (ps, shell history); ${how}`)
  for (const url of urls) {
    let key: unknown
    try {
      key = parseRemoteUrl(url).params?.encryptionKey
    } catch {
      continue // the command reports the bad URL itself
    }
    if (key !== undefined && key !== null && key !== false && key !== '') {
      throw new UsageError(`a remote URL on the command line carries encryptionKey: a key on the command line is visible to every user (ps, shell history); drop it from the URL and ${how}`)
    }
  }
}

/** The key for a command: --encryption-key-file, else the environment, else undefined (not encrypted). */
export async function cliEncryptionKey(flags: EncryptionKeyFlags, urls: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  refuseKeyInArgv(flags, urls)
  if (flags.encryptionKeyFile !== undefined) {
    let text: string
    try {
      text = await readFile(flags.encryptionKeyFile, 'utf8')
    } catch (error) {
      throw new UsageError(`--encryption-key-file: cannot read ${flags.encryptionKeyFile}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`, { cause: error })
    }
    const key = text.replace(/\r?\n$/, '')
    if (key === '') throw new UsageError(`--encryption-key-file: ${flags.encryptionKeyFile} is empty`)
    return key
  }
  const key = env[ENCRYPTION_KEY_ENV]
  return key === undefined || key === '' ? undefined : key
}

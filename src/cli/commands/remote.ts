/**
 * `backup-proxy remote test|ls`: probe a remote (write, read back, delete a probe file; report latency
 * and speed) or list a directory of it. The URL is in Xen Orchestra's format; its password never
 * reaches the output (the remote's displayUrl has it as `***`). An invalid URL exits 2, a remote that
 * fails exits 1. An encrypted remote's key comes from --encryption-key-file or the environment
 * (see ../encryption-key.ts), never from argv.
 */
import type { Command } from 'commander'
import type { Remote } from '../../remotes/remote.js'
import type { CliIo } from '../context.js'
import { sizeOption } from '../context.js'
import { cliEncryptionKey, encryptionKeyOptions, type EncryptionKeyFlags } from '../encryption-key.js'
import { REMOTE_PASSWORD_FILE_HELP, remoteUrlWithSecret } from '../secrets.js'


interface TestOptions extends EncryptionKeyFlags {
  remotePasswordFile?: string
  json?: boolean
  size: number
}

interface LsOptions extends EncryptionKeyFlags {
  remotePasswordFile?: string
  json?: boolean
  recursive?: boolean
  all?: boolean
}

async function withRemote<T>(urlText: string, encryptionKey: string | undefined, flags: { remotePasswordFile?: string }, fn: (remote: Remote) => Promise<T>): Promise<T> {
  const url = await remoteUrlWithSecret(urlText, flags)
  const { loadRemote } = await import('../../remotes/load.js')
  const remote = await loadRemote(url, encryptionKey === undefined ? {} : { encryptionKey })
  try {
    await remote.open()
    return await fn(remote)
  } finally {
    await remote.close()
  }
}

export function registerRemote(program: Command, io: CliIo): void {
  const remote = program.command('remote').description('work with a backup remote (file://, nfs://, smb://, s3://)')
  const test = remote
    .command('test')
    .description('write, read back and delete a probe file; report latency and speed')
    .argument('<url>', 'remote URL (Xen Orchestra format, e.g. s3://AK:SK@host/bucket/dir)')
    .option('--json', 'machine-readable output')
    .addOption(sizeOption('--size <size>', 'probe file size (e.g. 64MiB)', 16 * 1024 * 1024))
    .option('--remote-password-file <path>', REMOTE_PASSWORD_FILE_HELP)
  encryptionKeyOptions(test).action(async (url: string, options: TestOptions) => {
    const key = await cliEncryptionKey(options, [url])
    await withRemote(url, key, options, async (r) => {
      const result = await r.test({ sizeBytes: options.size })
      if (options.json === true) {
        io.stdout(`${JSON.stringify({ remote: r.displayUrl, ...result })}\n`)
      } else {
        io.stdout(
          `${r.displayUrl}: OK\n` +
            `  probe     ${(result.sizeBytes / 1024 / 1024).toFixed(1)} MiB\n` +
            `  write     ${result.writeMiBps.toFixed(1)} MiB/s (${result.writeDurationMs.toFixed(0)} ms)\n` +
            `  read      ${result.readMiBps.toFixed(1)} MiB/s (${result.readDurationMs.toFixed(0)} ms)\n` +
            `  latency   ${result.latencyMs.toFixed(1)} ms (stat)\n`,
        )
      }
    })
  })
  const ls = remote
    .command('ls')
    .description('list a directory of the remote')
    .argument('<url>', 'remote URL')
    .argument('[path]', 'path inside the remote', '')
    .option('-r, --recursive', 'list recursively')
    .option('-a, --all', 'include hidden entries (temporaries)')
    .option('--remote-password-file <path>', REMOTE_PASSWORD_FILE_HELP)
    .option('--json', 'machine-readable output')
  encryptionKeyOptions(ls).action(async (url: string, path: string, options: LsOptions) => {
    const key = await cliEncryptionKey(options, [url])
    await withRemote(url, key, options, async (r) => {
      const entries = await r.list(path, { recursive: options.recursive === true, includeHidden: options.all === true })
      if (options.json === true) io.stdout(`${JSON.stringify(entries)}\n`)
      else io.stdout(entries.map((e) => `${e.path}${e.isDirectory ? '/' : ''}\n`).join(''))
    })
  })
}

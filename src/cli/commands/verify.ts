/**
 * `backup-proxy verify <url> [--vm <uuid>] [--full] [--repair] [--json]`: checks every backup chain on a
 * remote (src/backup/verify.ts) and lists each problem with its path. `--repair` rewrites a bad
 * cache.json.gz (the only thing it repairs). Exit 0 when no problem is left, 1 otherwise. An encrypted
 * remote's key comes from --encryption-key-file or BACKUP_PROXY_ENCRYPTION_KEY, never argv.
 */
import type { Command } from 'commander'
import { BackupProxyError } from '../../common/errors.js'
import { formatBytes } from '../../common/units.js'
import { verifyRemote } from '../../backup/verify.js'
import { assertUuid } from '../../backup/layout.js'
import { createRemote } from '../../remotes/index.js'
import type { CliIo } from '../context.js'
import { cliEncryptionKey, encryptionKeyOptions, type EncryptionKeyFlags } from '../encryption-key.js'

interface VerifyFlags extends EncryptionKeyFlags {
  vm?: string
  full?: boolean
  repair?: boolean
  json?: boolean
}

export function registerVerify(program: Command, io: CliIo): void {
  const cmd = program
    .command('verify')
    .description('check backup chains on a remote: structure, parents, metadata, orphans')
    .argument('<url>', 'remote URL (file://, nfs://, smb://, s3://)')
    .option('--vm <uuid>', 'only this VM')
    .option('--full', 'also read every block of every chain')
    .option('--repair', 'rewrite a cache.json.gz Xen Orchestra cannot use (old format, stale) from the metadata files')
    .option('--json', 'machine-readable output')
  encryptionKeyOptions(cmd).action(async (url: string, flags: VerifyFlags) => {
    if (flags.vm !== undefined) assertUuid('--vm', flags.vm)
    const key = await cliEncryptionKey(flags, [url])
    const remote = createRemote(url, key === undefined ? {} : { encryptionKey: key })
    await remote.open()
    try {
      const report = await verifyRemote(remote, { ...(flags.vm === undefined ? {} : { vmUuid: flags.vm }), full: flags.full === true, repair: flags.repair === true })
      if (flags.json === true) io.stdout(`${JSON.stringify(report, null, 2)}\n`)
      else {
        io.stdout(`${remote.displayUrl}: ${report.vms} VM(s), ${report.backups} backup(s), ${report.vhds} VHD(s) checked${flags.full === true ? `, ${formatBytes(report.readBytes)} read` : ''}\n`)
        for (const w of report.warnings) io.stdout(`  warning: ${w}\n`)
        for (const p of report.problems) io.stdout(`  ${p.kind.toUpperCase()} ${p.path}: ${p.message}${p.repaired === true ? ' (repaired)' : ''}\n`)
        io.stdout(report.problems.length === 0 ? 'no problem found\n' : `${report.problems.length} problem(s)\n`)
      }
      const left = report.problems.filter((p) => p.repaired !== true)
      if (left.length > 0) throw new BackupProxyError('E_BACKUP', `verify found ${left.length} problem(s) on ${remote.displayUrl}`)
    } finally {
      await remote.close()
    }
  })
}

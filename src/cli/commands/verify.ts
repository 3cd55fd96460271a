/**
 * `backup-proxy verify <url> [--vm <uuid|name>] [--full] [--repair] [--json]`: checks every backup chain on
 * a remote (src/backup/verify.ts) and lists each problem with its path. `--repair` rewrites a bad
 * cache.json.gz (the only thing it repairs). Exit 0 when no problem is left, 1 otherwise. An encrypted
 * remote's key comes from --encryption-key-file or BACKUP_PROXY_ENCRYPTION_KEY (never argv); opened
 * without it, verify refuses with E_ENCRYPTION instead of reporting its files as problems. `--full` shows
 * a progress bar (plain lines when not on a terminal).
 */
import type { Command } from 'commander'
import { BackupProxyError } from '../../common/errors.js'
import { formatBytes } from '../../common/units.js'
import type { CliIo } from '../context.js'
import { openCliRemote, resolveVm, type RemoteFlags } from '../backups.js'
import { encryptionKeyOptions } from '../encryption-key.js'
import { createProgress } from '../progress.js'
import { REMOTE_PASSWORD_FILE_HELP } from '../secrets.js'

interface VerifyFlags extends RemoteFlags {
  vm?: string
  full?: boolean
  repair?: boolean
  json?: boolean
}

async function runVerify(url: string, flags: VerifyFlags, io: CliIo): Promise<void> {
  const { remote } = await openCliRemote(url, flags)
  try {
    const vmUuid = flags.vm === undefined ? undefined : await resolveVm(remote, flags.vm)
    const { verifyRemote } = await import('../../backup/verify.js')
    const progress = flags.full === true && (flags.json !== true || io.isTTY) ? createProgress(io, 'verify') : undefined
    const report = await verifyRemote(remote, {
      ...(vmUuid === undefined ? {} : { vmUuid }),
      full: flags.full === true,
      repair: flags.repair === true,
      ...(progress === undefined ? {} : { onProgress: (done: number, total: number) => progress.update({ percent: total === 0 ? 100 : (100 * done) / total, detail: `${done}/${total} backups` }) }),
    })
    progress?.done({ percent: 100, doneBytes: report.readBytes })
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
}

export function registerVerify(program: Command, io: CliIo): void {
  const cmd = program
    .command('verify')
    .description('check backup chains on a remote: structure, parents, metadata, orphans')
    .argument('<url>', 'remote URL (file://, nfs://, smb://, s3://)')
    .option('--vm <uuid|name>', 'only this VM (uuid or name)')
    .option('--full', 'also read every block of every chain')
    .option('--repair', 'rewrite a cache.json.gz Xen Orchestra cannot use (old format, stale) from the metadata files')
    .option('--json', 'machine-readable output')
    .option('--remote-password-file <path>', REMOTE_PASSWORD_FILE_HELP)
  encryptionKeyOptions(cmd).action(async (url: string, flags: VerifyFlags) => runVerify(url, flags, io))
}

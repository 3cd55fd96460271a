/**
 * `backup-proxy backups ls <url> [--vm <uuid|name>] [--json]`: every backup on a remote, as Xen
 * Orchestra lists them (one per metadata file), with the VM's name and uuid, time, mode, size, the VHD
 * chain a restore reads, and whether the remote is encrypted. The TIMESTAMP column is what
 * `restore --at` takes. An encrypted remote needs its key (--encryption-key-file or the environment).
 */
import type { Command } from 'commander'
import { formatBytes } from '../../common/units.js'
import type { CliIo } from '../context.js'
import { listBackupRows, openCliRemote, type BackupRow, type RemoteFlags } from '../backups.js'
import { encryptionKeyOptions } from '../encryption-key.js'
import { table } from '../table.js'
import { REMOTE_PASSWORD_FILE_HELP } from '../secrets.js'

interface LsFlags extends RemoteFlags {
  vm?: string
  json?: boolean
}

function formatBackupRows(rows: readonly BackupRow[]): string {
  if (rows.length === 0) return 'no backup\n'
  return `${table([
    ['VM', 'UUID', 'TIMESTAMP', 'TIME', 'MODE', 'SIZE', 'CHAIN', 'DISKS', 'ENCRYPTED', 'JOB'],
    ...rows.map((r) => [r.vm.name || '-', r.vm.uuid, r.timestamp, r.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z'), r.mode, formatBytes(r.sizeBytes), String(r.chainLength), String(r.disks), r.encrypted ? 'yes' : 'no', r.jobId]),
  ])}\n${rows.length} backup(s)\n`
}

export function registerBackups(program: Command, io: CliIo): void {
  const backups = program.command('backups').description('list the backups on a remote')
  const ls = backups
    .command('ls')
    .description('every backup: VM name and uuid, time, mode, size, chain length, encrypted or not')
    .argument('<url>', 'remote URL (file://, nfs://, smb://, s3://)')
    .option('--vm <uuid|name>', 'only this VM (uuid or name)')
    .option('--json', 'machine-readable output')
    .option('--remote-password-file <path>', REMOTE_PASSWORD_FILE_HELP)
  encryptionKeyOptions(ls).action(async (url: string, flags: LsFlags) => {
    const { remote, encryptionKey } = await openCliRemote(url, flags)
    try {
      const rows = await listBackupRows(remote, encryptionKey !== undefined, flags.vm)
      io.stdout(flags.json === true ? `${JSON.stringify(rows, null, 2)}\n` : formatBackupRows(rows))
    } finally {
      await remote.close()
    }
  })
}

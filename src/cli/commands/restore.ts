/**
 * `backup-proxy restore <url> --vm <uuid|name> [--at <timestamp|ISO date|latest>]` then either
 * - `--disk <vdiUuid> --to <file.raw|file.vhd>`: rebuilds a disk at a point in time from its chain
 *   (src/backup/restore.ts), written atomically; or
 * - `--sr <uuid> --xapi <https://user@host>`: restores the whole VM of that backup onto the SR of the pool
 *   (src/backup/import-vm-backup.ts, run in this process), as XO's importVmBackup does; a failure or
 *   Ctrl-C removes what it created. The XAPI password comes from --xapi-password-file or
 *   BACKUP_PROXY_XAPI_PASSWORD (a password in the URL still works but is never needed).
 *
 * `--at` takes what `backups ls` prints. An encrypted remote's key comes from --encryption-key-file or
 * BACKUP_PROXY_ENCRYPTION_KEY, never argv. Both forms show a progress bar (plain lines off a terminal).
 * The work itself is in ./restore-run.ts, loaded when the command runs.
 */
import type { Command } from 'commander'
import type { CliIo } from '../context.js'
import type { RemoteFlags } from '../backups.js'
import { encryptionKeyOptions } from '../encryption-key.js'
import { REMOTE_PASSWORD_FILE_HELP } from '../secrets.js'

export interface RestoreFlags extends RemoteFlags {
  vm: string
  disk?: string
  at?: string
  to?: string
  sr?: string
  xapi?: string
  xapiUser?: string
  xapiPasswordFile?: string
  start?: boolean
  name?: string
  json?: boolean
  allowUnauthorized?: boolean
}

export function registerRestore(program: Command, io: CliIo): void {
  const cmd = program
    .command('restore')
    .description('rebuild a disk from its backup chain as a raw image or a single VHD, or restore the whole VM onto a pool')
    .argument('<url>', 'remote URL')
    .requiredOption('--vm <uuid|name>', 'VM uuid or name')
    .option('--at <timestamp>', 'which backup: its TIMESTAMP as `backups ls` prints it, an ISO date, or latest (default)')
    .option('--disk <vdiUuid>', 'disk form: VDI uuid of the disk')
    .option('--to <file>', 'disk form: output file, .raw or .vhd')
    .option('--sr <uuid>', 'VM form: SR of the pool the VM is restored on')
    .option('--xapi <url>', 'VM form: XAPI URL of the pool master (https://user@host)')
    .option('--xapi-user <name>', 'VM form: XAPI user (default: the user in --xapi)')
    .option('--xapi-password-file <path>', 'VM form: file holding the XAPI password (or env BACKUP_PROXY_XAPI_PASSWORD)')
    .option('--start', 'VM form: start the restored VM')
    .option('--name <label>', 'VM form: name of the restored VM (default "<name> (<timestamp>)")')
    .option('--allow-unauthorized', 'VM form: accept a self-signed XAPI certificate')
    .option('--json', 'machine-readable result')
    .option('--remote-password-file <path>', REMOTE_PASSWORD_FILE_HELP)
  encryptionKeyOptions(cmd).action(async (url: string, flags: RestoreFlags) => {
    const { runRestore } = await import('./restore-run.js')
    await runRestore(url, flags, io)
  })
}

/**
 * `backup-proxy metadata list|restore|delete <url>`: the metadata backups (XO's pool database dumps and
 * XO configuration backups) on a remote, in Xen Orchestra's layout. `list` prints them (ids as XO's
 * listing gives them), `restore <id> --xapi https://user:password@host` sends a pool backup's database
 * dump to that pool (XAPI's PUT /pool/xmldbdump, as XO's restore), or with `--to <file>` writes an XO
 * configuration backup's data to a file, `delete <id>` removes one. Running a metadata backup is a
 * queue task: `backup --task <file>` with a backup.metadata task (or XO's API `backup.run`).
 */
import { writeFile } from 'node:fs/promises'
import type { Command } from 'commander'
import { UsageError } from '../../common/errors.js'
import type { Remote } from '../../remotes/remote.js'
import type { CliIo } from '../context.js'
import { REMOTE_PASSWORD_FILE_HELP, remoteUrlWithSecret, xapiTarget } from '../secrets.js'

interface RemoteFlags {
  remotePasswordFile?: string
}
interface RestoreFlags extends RemoteFlags {
  xapi?: string
  xapiUser?: string
  xapiPasswordFile?: string
  to?: string
  allowUnauthorized?: boolean
}

// the remote, XAPI and layout modules load when a subcommand runs (the CLI's start stays light)
const layout = () => import('../../backup/metadata-layout.js')

async function withRemote<T>(url: string, flags: RemoteFlags, fn: (remote: Remote) => Promise<T>): Promise<T> {
  const { loadRemote } = await import('../../remotes/load.js')
  const remote = await loadRemote(await remoteUrlWithSecret(url, flags))
  try {
    await remote.open()
    return await fn(remote)
  } finally {
    await remote.close()
  }
}

async function restore(url: string, id: string, flags: RestoreFlags, io: CliIo): Promise<void> {
  const { parseMetadataBackupId, readXoConfigBackup } = await layout()
  const parsed = parseMetadataBackupId(id)
  await withRemote(url, flags, async (remote) => {
    if (parsed.type === 'xoConfig') {
      if (flags.to === undefined) throw new UsageError('an XO configuration backup is restored by Xen Orchestra: give --to <file> to write its data')
      const data = await readXoConfigBackup(remote, id)
      await writeFile(flags.to, typeof data === 'string' ? data : Buffer.from(data.data, 'base64'))
      io.stdout(`${JSON.stringify({ backupId: parsed.dir, to: flags.to })}\n`)
      return
    }
    if (flags.xapi === undefined) throw new UsageError('a pool metadata restore needs --xapi https://user@host (the pool master) and the password in --xapi-password-file or BACKUP_PROXY_XAPI_PASSWORD')
    const x = await xapiTarget(flags.xapi, flags)
    const allowUnauthorized = flags.allowUnauthorized === true
    const signal = new AbortController().signal
    const [{ XapiClient }, { restorePoolMetadata }] = await Promise.all([import('../../xapi/client.js'), import('../../backup/metadata-backup.js')])
    const client = await XapiClient.connect({ url: x.url, user: x.username, password: x.password, allowUnauthorized, signal })
    try {
      const result = await restorePoolMetadata(remote, id, client, { allowUnauthorized, signal })
      io.stdout(`${JSON.stringify({ backupId: parsed.dir, pool: parsed.poolUuid, ...result })}\n`)
    } finally {
      await client.close()
    }
  })
}

export function registerMetadata(program: Command, io: CliIo): void {
  const cmd = program.command('metadata').description('list, restore or delete the metadata backups (pool database dumps, XO configuration) of a remote')
  cmd
    .command('list')
    .argument('<url>', 'remote URL')
    .description('the pool metadata backups (by pool) and XO configuration backups, oldest first, as JSON')
    .option('--remote-password-file <path>', REMOTE_PASSWORD_FILE_HELP)
    .action(async (url: string, flags: RemoteFlags) => {
      const { listPoolMetadataBackups, listXoMetadataBackups } = await layout()
      await withRemote(url, flags, async (remote) => {
        io.stdout(`${JSON.stringify({ pools: await listPoolMetadataBackups(remote), xo: await listXoMetadataBackups(remote) }, null, 2)}\n`)
      })
    })
  cmd
    .command('restore')
    .argument('<url>', 'remote URL')
    .argument('<id>', 'backup id (from metadata list)')
    .option('--xapi <url>', 'pool master to restore a pool metadata backup to (https://user@host)')
    .option('--xapi-user <name>', 'XAPI user (instead of the one in --xapi)')
    .option('--xapi-password-file <path>', 'file holding the XAPI password (or env BACKUP_PROXY_XAPI_PASSWORD)')
    .option('--remote-password-file <path>', REMOTE_PASSWORD_FILE_HELP)
    .option('--allow-unauthorized', 'accept a self-signed XAPI certificate')
    .option('--to <file>', 'write an XO configuration backup\'s data to this file')
    .description('send a pool metadata backup to its pool, or write an XO configuration backup to a file')
    .action((url: string, id: string, flags: RestoreFlags) => restore(url, id, flags, io))
  cmd
    .command('delete')
    .argument('<url>', 'remote URL')
    .argument('<id>', 'backup id (from metadata list)')
    .option('--remote-password-file <path>', REMOTE_PASSWORD_FILE_HELP)
    .description('remove one metadata backup')
    .action(async (url: string, id: string, flags: RemoteFlags) => {
      const { deleteMetadataBackup, parseMetadataBackupId } = await layout()
      await withRemote(url, flags, (remote) => deleteMetadataBackup(remote, id))
      io.stdout(`${JSON.stringify({ deleted: parseMetadataBackupId(id).dir })}\n`)
    })
}

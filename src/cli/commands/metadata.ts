/**
 * `backup-proxy metadata list|restore|delete <url>`: the metadata backups (XO's pool database dumps and
 * XO configuration backups) on a remote, in Xen Orchestra's layout. `list` prints them as a table
 * (ids as XO's listing gives them; `--json`: XO's listing itself, `{pools: {<uuid>: [...]}, xo: [...]}`), `restore <id> --xapi https://user:password@host` sends a pool backup's database
 * dump to that pool (XAPI's PUT /pool/xmldbdump, as XO's restore), or with `--to <file>` writes an XO
 * configuration backup's data to a file, `delete <id>` removes one; each prints a line saying what it did
 * (`--json`: an object). Running a metadata backup is a
 * queue task: `backup --task <file>` with a backup.metadata task (or XO's API `backup.run`).
 */
import { writeFile } from 'node:fs/promises'
import type { Command } from 'commander'
import { UsageError } from '../../common/errors.js'
import { formatBytes } from '../../common/units.js'
import type { Remote } from '../../remotes/remote.js'
import type { CliIo } from '../context.js'
import { REMOTE_PASSWORD_FILE_HELP, remoteUrlWithSecret, xapiTarget } from '../secrets.js'
import { table } from '../table.js'

interface RemoteFlags {
  remotePasswordFile?: string
  json?: boolean
}
type Listed = Record<string, unknown> & { id: string; timestamp: number }

const text = (v: unknown): string => (typeof v === 'string' && v !== '' ? v : '-')
const nameOf = (v: unknown): string => (typeof v === 'object' && v !== null && 'name_label' in v ? text(v.name_label) : '-')

/** One row per backup, pools first: TYPE, POOL (name and uuid), TIME, JOB, ID (what restore and delete take). */
export function formatMetadataList(pools: Record<string, Listed[]>, xo: readonly Listed[]): string {
  const rows = [
    ...Object.entries(pools).flatMap(([uuid, list]) => list.map((b) => ['pool', nameOf(b.pool), uuid, new Date(b.timestamp).toISOString(), text(b.jobName ?? b.jobId), b.id])),
    ...xo.map((b) => ['xo-config', '-', '-', new Date(b.timestamp).toISOString(), text(b.jobName ?? b.jobId), b.id]),
  ]
  if (rows.length === 0) return 'no metadata backup\n'
  return `${table([['TYPE', 'POOL', 'POOL UUID', 'TIME', 'JOB', 'ID'], ...rows])}\n${rows.length} metadata backup(s)\n`
}

/** `--json`: the object; otherwise the human line. */
function report(io: CliIo, flags: RemoteFlags, json: Record<string, unknown>, human: string): void {
  io.stdout(flags.json === true ? `${JSON.stringify(json)}\n` : `${human}\n`)
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
      report(io, flags, { backupId: parsed.dir, to: flags.to }, `wrote XO configuration backup ${parsed.dir} to ${flags.to}`)
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
      report(io, flags, { backupId: parsed.dir, pool: parsed.poolUuid, ...result }, `restored pool metadata backup ${parsed.dir} (${formatBytes(result.sizeBytes)}) to pool ${parsed.poolUuid}`)
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
    .description('the pool metadata backups (by pool) and XO configuration backups, oldest first')
    .option('--json', 'XO\'s listing as JSON ({pools: {<uuid>: [...]}, xo: [...]})')
    .option('--remote-password-file <path>', REMOTE_PASSWORD_FILE_HELP)
    .action(async (url: string, flags: RemoteFlags) => {
      const { listPoolMetadataBackups, listXoMetadataBackups } = await layout()
      await withRemote(url, flags, async (remote) => {
        const pools = await listPoolMetadataBackups(remote)
        const xo = await listXoMetadataBackups(remote)
        io.stdout(flags.json === true ? `${JSON.stringify({ pools, xo }, null, 2)}\n` : formatMetadataList(pools, xo))
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
    .option('--json', 'print the result as JSON')
    .description('send a pool metadata backup to its pool, or write an XO configuration backup to a file')
    .action((url: string, id: string, flags: RestoreFlags) => restore(url, id, flags, io))
  cmd
    .command('delete')
    .argument('<url>', 'remote URL')
    .argument('<id>', 'backup id (from metadata list)')
    .option('--remote-password-file <path>', REMOTE_PASSWORD_FILE_HELP)
    .option('--json', 'print the result as JSON')
    .description('remove one metadata backup')
    .action(async (url: string, id: string, flags: RemoteFlags) => {
      const { deleteMetadataBackup, parseMetadataBackupId } = await layout()
      await withRemote(url, flags, (remote) => deleteMetadataBackup(remote, id))
      const dir = parseMetadataBackupId(id).dir
      report(io, flags, { deleted: dir }, `deleted metadata backup ${dir}`)
    })
}

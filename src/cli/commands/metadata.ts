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
import { redactString } from '../../common/redact.js'
import { restorePoolMetadata } from '../../backup/metadata-backup.js'
import { deleteMetadataBackup, listPoolMetadataBackups, listXoMetadataBackups, parseMetadataBackupId, readXoConfigBackup } from '../../backup/metadata-layout.js'
import { createRemote } from '../../remotes/index.js'
import type { Remote } from '../../remotes/remote.js'
import { XapiClient } from '../../xapi/client.js'
import type { CliIo } from '../context.js'

async function withRemote<T>(url: string, fn: (remote: Remote) => Promise<T>): Promise<T> {
  const remote = createRemote(url)
  try {
    await remote.open()
    return await fn(remote)
  } finally {
    await remote.close()
  }
}

function xapiOf(flag: string): { url: string; user: string; password: string } {
  let u: URL
  try {
    u = new URL(flag)
  } catch (error) {
    throw new UsageError(`--xapi: not a URL: ${redactString(flag)}`, { cause: error })
  }
  const out = { user: decodeURIComponent(u.username), password: decodeURIComponent(u.password), url: '' }
  u.username = ''
  u.password = ''
  out.url = u.toString().replace(/\/$/, '')
  return out
}

async function restore(url: string, id: string, flags: { xapi?: string; to?: string; allowUnauthorized?: boolean }, io: CliIo): Promise<void> {
  const parsed = parseMetadataBackupId(id)
  await withRemote(url, async (remote) => {
    if (parsed.type === 'xoConfig') {
      if (flags.to === undefined) throw new UsageError('an XO configuration backup is restored by Xen Orchestra: give --to <file> to write its data')
      const data = await readXoConfigBackup(remote, id)
      await writeFile(flags.to, typeof data === 'string' ? data : Buffer.from(data.data, 'base64'))
      io.stdout(`${JSON.stringify({ backupId: parsed.dir, to: flags.to })}\n`)
      return
    }
    if (flags.xapi === undefined) throw new UsageError('a pool metadata restore needs --xapi https://user:password@host (the pool master)')
    const x = xapiOf(flags.xapi)
    const allowUnauthorized = flags.allowUnauthorized === true
    const signal = new AbortController().signal
    const client = await XapiClient.connect({ ...x, allowUnauthorized, signal })
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
    .action(async (url: string) => {
      await withRemote(url, async (remote) => {
        io.stdout(`${JSON.stringify({ pools: await listPoolMetadataBackups(remote), xo: await listXoMetadataBackups(remote) }, null, 2)}\n`)
      })
    })
  cmd
    .command('restore')
    .argument('<url>', 'remote URL')
    .argument('<id>', 'backup id (from metadata list)')
    .option('--xapi <url>', 'pool master to restore a pool metadata backup to (https://user:password@host)')
    .option('--allow-unauthorized', 'accept a self-signed XAPI certificate')
    .option('--to <file>', 'write an XO configuration backup\'s data to this file')
    .description('send a pool metadata backup to its pool, or write an XO configuration backup to a file')
    .action((url: string, id: string, flags: { xapi?: string; to?: string; allowUnauthorized?: boolean }) => restore(url, id, flags, io))
  cmd
    .command('delete')
    .argument('<url>', 'remote URL')
    .argument('<id>', 'backup id (from metadata list)')
    .description('remove one metadata backup')
    .action(async (url: string, id: string) => {
      await withRemote(url, (remote) => deleteMetadataBackup(remote, id))
      io.stdout(`${JSON.stringify({ deleted: parseMetadataBackupId(id).dir })}\n`)
    })
}

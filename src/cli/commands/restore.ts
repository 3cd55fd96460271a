/**
 * `backup-proxy restore <url> --vm <uuid> --disk <vdiUuid> [--at <ts>] --to <file.raw|file.vhd>`:
 * rebuilds a disk at a point in time from its chain (src/backup/restore.ts), written atomically. An
 * encrypted remote's key comes from --encryption-key-file or BACKUP_PROXY_ENCRYPTION_KEY, never argv.
 */
import type { Command } from 'commander'
import { formatBytes, formatDurationMs } from '../../common/units.js'
import { assertUuid, parseTimestamp } from '../../backup/layout.js'
import { formatOfPath, restoreDiskToFile } from '../../backup/restore.js'
import { createRemote } from '../../remotes/index.js'
import type { CliIo } from '../context.js'
import { cliEncryptionKey, encryptionKeyOptions, type EncryptionKeyFlags } from '../encryption-key.js'

interface RestoreFlags extends EncryptionKeyFlags {
  vm: string
  disk: string
  at?: string
  to: string
}

export function registerRestore(program: Command, io: CliIo): void {
  const cmd = program
    .command('restore')
    .description('rebuild a disk from its backup chain as a raw image or a single VHD')
    .argument('<url>', 'remote URL')
    .requiredOption('--vm <uuid>', 'VM uuid')
    .requiredOption('--disk <vdiUuid>', 'VDI uuid of the disk')
    .option('--at <timestamp>', 'backup timestamp (YYYYMMDDTHHmmssZ); default newest')
    .requiredOption('--to <file>', 'output file: .raw or .vhd')
  encryptionKeyOptions(cmd).action(async (url: string, flags: RestoreFlags) => {
    assertUuid('--vm', flags.vm)
    assertUuid('--disk', flags.disk)
    if (flags.at !== undefined) parseTimestamp(flags.at)
    formatOfPath(flags.to)
    const key = await cliEncryptionKey(flags, [url])
    const remote = createRemote(url, key === undefined ? {} : { encryptionKey: key })
    await remote.open()
    try {
      const r = await restoreDiskToFile(remote, { vmUuid: flags.vm, vdiUuid: flags.disk, ...(flags.at === undefined ? {} : { at: flags.at }) }, flags.to)
      io.stdout(`restored disk ${flags.disk} of VM ${flags.vm} at ${r.timestamp} (chain of ${r.chain.length}: ${r.chain.join(' → ')})\n`)
      io.stdout(`  ${flags.to}: ${formatBytes(r.writtenBytes)} (virtual size ${formatBytes(r.virtualSizeBytes)}) in ${formatDurationMs(r.durationMs)}\n`)
    } finally {
      await remote.close()
    }
  })
}

/**
 * `backup-proxy restore <url> --vm <uuid> [--at <ts>]` then either
 * - `--disk <vdiUuid> --to <file.raw|file.vhd>`: rebuilds a disk at a point in time from its chain
 *   (src/backup/restore.ts), written atomically; or
 * - `--sr <uuid> --xapi <https://user:password@host> [--start] [--name <label>]`: restores the whole VM
 *   of that backup onto the SR of the pool (src/backup/import-vm-backup.ts, run in this process), as XO's
 *   importVmBackup does; a failure or Ctrl-C removes what it created.
 *
 * An encrypted remote's key comes from --encryption-key-file or BACKUP_PROXY_ENCRYPTION_KEY, never argv.
 */
import type { Command } from 'commander'
import { UsageError } from '../../common/errors.js'
import { redactString } from '../../common/redact.js'
import { formatBytes, formatDurationMs } from '../../common/units.js'
import { inlineImporter } from '../../backup/disk-import.js'
import { importVmBackup } from '../../backup/import-vm-backup.js'
import { assertUuid, parseTimestamp } from '../../backup/layout.js'
import { findVmBackup, formatOfPath, restoreDiskToFile } from '../../backup/restore.js'
import { remoteOptionsOf } from '../../backup/run.js'
import { createRemote } from '../../remotes/index.js'
import type { Remote } from '../../remotes/remote.js'
import { XapiClient } from '../../xapi/client.js'
import type { CliIo } from '../context.js'
import { cliEncryptionKey, encryptionKeyOptions, type EncryptionKeyFlags } from '../encryption-key.js'

interface RestoreFlags extends EncryptionKeyFlags {
  vm: string
  disk?: string
  at?: string
  to?: string
  sr?: string
  xapi?: string
  start?: boolean
  name?: string
  allowUnauthorized?: boolean
}

function checkFlags(flags: RestoreFlags): 'disk' | 'vm' {
  assertUuid('--vm', flags.vm)
  if (flags.at !== undefined) parseTimestamp(flags.at)
  const diskForm = flags.disk !== undefined || flags.to !== undefined
  const vmForm = flags.sr !== undefined || flags.xapi !== undefined || flags.start === true || flags.name !== undefined
  if (diskForm === vmForm) throw new UsageError('give either --disk <vdiUuid> --to <file> (one disk to a file), or --sr <uuid> --xapi <url> (the whole VM onto a pool)')
  if (diskForm) {
    if (flags.disk === undefined || flags.to === undefined) throw new UsageError('a disk restore needs both --disk <vdiUuid> and --to <file.raw|file.vhd>')
    assertUuid('--disk', flags.disk)
    formatOfPath(flags.to)
    return 'disk'
  }
  if (flags.sr === undefined || flags.xapi === undefined) throw new UsageError('a VM restore needs both --sr <uuid> and --xapi <https://user:password@host>')
  assertUuid('--sr', flags.sr)
  return 'vm'
}

async function connectXapi(urlText: string, allowUnauthorized: boolean, signal: AbortSignal): Promise<XapiClient> {
  let url: URL
  try {
    url = new URL(urlText)
  } catch (error) {
    throw new UsageError(`--xapi: not a URL: ${redactString(urlText)}`, { cause: error })
  }
  const user = decodeURIComponent(url.username)
  const password = decodeURIComponent(url.password)
  url.username = ''
  url.password = ''
  return XapiClient.connect({ url: url.toString().replace(/\/$/, ''), user, password, allowUnauthorized, signal })
}

async function restoreVm(url: string, key: string | undefined, remote: Remote, flags: RestoreFlags, io: CliIo): Promise<void> {
  const t0 = performance.now()
  const backup = await findVmBackup(remote, flags.vm, flags.at)
  const controller = new AbortController()
  const onSigint = (): void => controller.abort()
  process.once('SIGINT', onSigint)
  const xapi = await connectXapi(flags.xapi!, flags.allowUnauthorized === true, controller.signal)
  try {
    let lastPercent = -1
    const r = await importVmBackup({
      remote,
      remoteSpec: { url, options: { ...remoteOptionsOf({ url }), ...(key === undefined ? {} : { encryptionKey: key }) } },
      metadataPath: backup.metadataPath,
      xapi,
      srUuid: flags.sr!,
      start: flags.start === true,
      ...(flags.name === undefined ? {} : { nameLabel: flags.name }),
      importer: inlineImporter,
      signal: controller.signal,
      onProgress: (p) => {
        if (io.isTTY && p.percent !== lastPercent) io.stderr(`\r  ${(lastPercent = p.percent ?? 0)}%`)
      },
    })
    if (io.isTTY) io.stderr('\n')
    io.stdout(`restored VM ${flags.vm} at ${r.timestamp} as VM ${r.restoredVmUuid} on SR ${r.srUuid}${r.started ? ' (started)' : ''}\n`)
    for (const v of r.vdis) io.stdout(`  disk ${v.userdevice ?? '-'}: VDI ${v.uuid} "${v.nameLabel}" (${formatBytes(v.virtualSizeBytes)})\n`)
    for (const v of r.vifs) io.stdout(`  VIF ${v.device}: network ${v.networkUuid}, MAC ${v.MAC}\n`)
    io.stdout(`  ${formatBytes(r.sizeBytes)} imported in ${formatDurationMs(performance.now() - t0)}\n`)
  } finally {
    process.off('SIGINT', onSigint)
    await xapi.close()
  }
}

export function registerRestore(program: Command, io: CliIo): void {
  const cmd = program
    .command('restore')
    .description('rebuild a disk from its backup chain as a raw image or a single VHD, or restore the whole VM onto a pool')
    .argument('<url>', 'remote URL')
    .requiredOption('--vm <uuid>', 'VM uuid')
    .option('--at <timestamp>', 'backup timestamp (YYYYMMDDTHHmmssZ); default newest')
    .option('--disk <vdiUuid>', 'disk form: VDI uuid of the disk')
    .option('--to <file>', 'disk form: output file, .raw or .vhd')
    .option('--sr <uuid>', 'VM form: SR of the pool the VM is restored on')
    .option('--xapi <url>', 'VM form: XAPI URL of the pool (https://user:password@host)')
    .option('--start', 'VM form: start the restored VM')
    .option('--name <label>', 'VM form: name of the restored VM (default "<name> (<timestamp>)")')
    .option('--allow-unauthorized', 'VM form: accept a self-signed XAPI certificate')
  encryptionKeyOptions(cmd).action(async (url: string, flags: RestoreFlags) => {
      const form = checkFlags(flags)
      const key = await cliEncryptionKey(flags, [url])
      const remote = createRemote(url, key === undefined ? {} : { encryptionKey: key })
      await remote.open()
      try {
        if (form === 'vm') return await restoreVm(url, key, remote, flags, io)
        const r = await restoreDiskToFile(remote, { vmUuid: flags.vm, vdiUuid: flags.disk!, ...(flags.at === undefined ? {} : { at: flags.at }) }, flags.to!)
        io.stdout(`restored disk ${flags.disk} of VM ${flags.vm} at ${r.timestamp} (chain of ${r.chain.length}: ${r.chain.join(' → ')})\n`)
        io.stdout(`  ${flags.to}: ${formatBytes(r.writtenBytes)} (virtual size ${formatBytes(r.virtualSizeBytes)}) in ${formatDurationMs(r.durationMs)}\n`)
      } finally {
        await remote.close()
      }
    })
}

/**
 * The action of `backup-proxy restore` (see ./restore.ts), loaded only when it runs: checks the flags,
 * resolves the VM (uuid or name) and `--at`, then restores one disk to a file or the whole VM onto a
 * pool, with a progress bar and a human summary (or `--json`).
 */
import { UsageError } from '../../common/errors.js'
import { formatBytes, formatDurationMs } from '../../common/units.js'
import { assertUuid } from '../../backup/layout.js'
import { findDiskBackup, findVmBackup, formatOfPath, restoreDiskToFile } from '../../backup/restore.js'
import type { Remote } from '../../remotes/remote.js'
import type { CliIo } from '../context.js'
import { normalizeAt, openCliRemote, resolveVm } from '../backups.js'
import { createProgress } from '../progress.js'
import { xapiTarget } from '../secrets.js'
import type { RestoreFlags } from './restore.js'

function checkFlags(flags: RestoreFlags): 'disk' | 'vm' {
  const diskForm = flags.disk !== undefined || flags.to !== undefined
  const vmForm = flags.sr !== undefined || flags.xapi !== undefined || flags.start === true || flags.name !== undefined
  if (diskForm === vmForm) throw new UsageError('give either --disk <vdiUuid> --to <file> (one disk to a file), or --sr <uuid> --xapi <url> (the whole VM onto a pool)')
  if (diskForm) {
    if (flags.disk === undefined || flags.to === undefined) throw new UsageError('a disk restore needs both --disk <vdiUuid> and --to <file.raw|file.vhd>')
    assertUuid('--disk', flags.disk)
    formatOfPath(flags.to)
    return 'disk'
  }
  if (flags.sr === undefined || flags.xapi === undefined) throw new UsageError('a VM restore needs both --sr <uuid> and --xapi <https://user@host>')
  assertUuid('--sr', flags.sr)
  return 'vm'
}

interface Ctx {
  url: string
  key: string | undefined
  remote: Remote
  vmUuid: string
  at: string | undefined
}

async function restoreVm(c: Ctx, flags: RestoreFlags, io: CliIo): Promise<void> {
  const t0 = performance.now()
  const backup = await findVmBackup(c.remote, c.vmUuid, c.at)
  const target = await xapiTarget(flags.xapi!, flags)
  const [{ XapiClient }, { importVmBackup }, { inlineImporter }, { remoteOptionsOf }] = await Promise.all([
    import('../../xapi/client.js'),
    import('../../backup/import-vm-backup.js'),
    import('../../backup/disk-import.js'),
    import('../../backup/run.js'),
  ])
  const controller = new AbortController()
  const onSigint = (): void => controller.abort()
  process.once('SIGINT', onSigint)
  const xapi = await XapiClient.connect({ url: target.url, user: target.username, password: target.password, allowUnauthorized: flags.allowUnauthorized === true, signal: controller.signal })
  const progress = flags.json !== true || io.isTTY ? createProgress(io, 'restore') : undefined
  try {
    const r = await importVmBackup({
      remote: c.remote,
      remoteSpec: { url: c.url, options: { ...remoteOptionsOf({ url: c.url }), ...(c.key === undefined ? {} : { encryptionKey: c.key }) } },
      metadataPath: backup.metadataPath,
      xapi,
      srUuid: flags.sr!,
      start: flags.start === true,
      ...(flags.name === undefined ? {} : { nameLabel: flags.name }),
      importer: inlineImporter,
      signal: controller.signal,
      onProgress: (p) => progress?.update({ percent: p.percent, doneBytes: p.doneBytes, totalBytes: p.totalBytes }),
    })
    progress?.done({ percent: 100 })
    if (flags.json === true) return void io.stdout(`${JSON.stringify(r, null, 2)}\n`)
    io.stdout(`restored VM ${c.vmUuid} at ${r.timestamp} as VM ${r.restoredVmUuid} on SR ${r.srUuid}${r.started ? ' (started)' : ''}\n`)
    for (const v of r.vdis) io.stdout(`  disk ${v.userdevice ?? '-'}: VDI ${v.uuid} "${v.nameLabel}" (${formatBytes(v.virtualSizeBytes)})\n`)
    for (const v of r.vifs) io.stdout(`  VIF ${v.device}: network ${v.networkUuid}, MAC ${v.MAC}\n`)
    io.stdout(`  ${formatBytes(r.sizeBytes)} imported in ${formatDurationMs(performance.now() - t0)}\n`)
  } finally {
    process.off('SIGINT', onSigint)
    await xapi.close()
  }
}

async function restoreDisk(c: Ctx, flags: RestoreFlags, io: CliIo): Promise<void> {
  const sel = { vmUuid: c.vmUuid, vdiUuid: flags.disk!, ...(c.at === undefined ? {} : { at: c.at }) }
  const found = await findDiskBackup(c.remote, sel)
  const ref = Object.keys(found.backup.metadata.vhds).find((k) => found.vhdPath.endsWith(found.backup.metadata.vhds[k]!.replace(/^\.\//, '')))
  const virtual = Number(ref === undefined ? NaN : found.backup.metadata.vdis[ref]?.virtual_size)
  const total = formatOfPath(flags.to!) === 'raw' && Number.isFinite(virtual) ? virtual : undefined
  const progress = flags.json !== true || io.isTTY ? createProgress(io, 'restore') : undefined
  const r = await restoreDiskToFile(c.remote, sel, flags.to!, { onProgress: (n) => progress?.update({ doneBytes: n, totalBytes: total }) })
  progress?.done({ percent: 100, doneBytes: r.writtenBytes })
  if (flags.json === true) return void io.stdout(`${JSON.stringify({ vm: c.vmUuid, disk: flags.disk, to: flags.to, ...r }, null, 2)}\n`)
  io.stdout(`restored disk ${flags.disk} of VM ${c.vmUuid} at ${r.timestamp} (chain of ${r.chain.length}: ${r.chain.join(' → ')})\n`)
  const sparse = r.dataBytes < r.writtenBytes ? `, sparse: ${formatBytes(r.dataBytes)} of data, the rest holes` : ''
  io.stdout(`  ${flags.to}: ${formatBytes(r.writtenBytes)} (virtual size ${formatBytes(r.virtualSizeBytes)}${sparse}) in ${formatDurationMs(r.durationMs)}\n`)
}

export async function runRestore(url: string, flags: RestoreFlags, io: CliIo): Promise<void> {
  const form = checkFlags(flags)
  const at = normalizeAt(flags.at)
  const { remote, url: fullUrl, encryptionKey } = await openCliRemote(url, flags)
  try {
    const c: Ctx = { url: fullUrl, key: encryptionKey, remote, vmUuid: await resolveVm(remote, flags.vm), at }
    if (form === 'vm') await restoreVm(c, flags, io)
    else await restoreDisk(c, flags, io)
  } finally {
    await remote.close()
  }
}

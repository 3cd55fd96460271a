/**
 * The backup.run task of `backup-proxy backup` from its flags or `--task <file>` (loaded only when the
 * command runs): VMs by uuid or by name (an XO smart-mode pattern on name_label), secrets from files or
 * the environment (../secrets.ts), stable remote ids.
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import type { Command } from 'commander'
import { UsageError } from '../../common/errors.js'
import { redactString } from '../../common/redact.js'
import type { TaskInput } from '../../queue/tasks.js'
import { cliEncryptionKey, refuseKeyInArgv } from '../encryption-key.js'
import { remoteUrlWithSecret, xapiTarget } from '../secrets.js'
import type { BackupFlags } from './backup.js'

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** `vms` of the job: a uuid list, or XO's smart-mode pattern on name_label for names. */
function vmsPattern(vms: readonly string[]): Record<string, unknown> {
  const uuids = vms.filter((v) => UUID_RE.test(v))
  if (uuids.length === vms.length) return { uuid: vms.length === 1 ? vms[0] : { __or: [...vms] } }
  if (uuids.length > 0) throw new UsageError(`--vm: give either VM uuids or VM names in one run, not both (uuids: ${uuids.join(', ')})`)
  return { name_label: vms.length === 1 ? vms[0] : { __or: [...vms] } }
}

async function taskFromFile(flags: BackupFlags, cmd: Command): Promise<TaskInput> {
  const clash = ['xapi', 'xapiUser', 'xapiPasswordFile', 'vm', 'remote', 'remotePasswordFile', 'encryptionKeyFile', 'jobId'].filter((k) => flags[k as keyof BackupFlags] !== undefined)
  if (cmd.getOptionValueSource('mode') === 'cli') clash.push('mode')
  if (clash.length > 0) {
    const names = clash.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`)
    throw new UsageError(`--task <file> carries the whole task: ${names.join(', ')} would be ignored; put them in the task file or drop --task`)
  }
  refuseKeyInArgv(flags, [])
  let text: string
  try {
    text = await readFile(flags.task!, 'utf8')
  } catch (error) {
    throw new UsageError(`--task: cannot read ${flags.task}: ${(error as Error).message}`, { cause: error })
  }
  try {
    return JSON.parse(text) as TaskInput
  } catch (error) {
    throw new UsageError(`--task: ${flags.task} is not valid JSON: ${(error as Error).message}`, { cause: error })
  }
}

export async function taskFromFlags(flags: BackupFlags, cmd: Command): Promise<TaskInput> {
  if (flags.task !== undefined) return taskFromFile(flags, cmd)
  if (flags.xapi === undefined || (flags.vm ?? []).length === 0 || (flags.remote ?? []).length === 0) {
    throw new UsageError('give --task <file>, or --xapi <url> with at least one --vm <uuid|name> and one --remote <url>')
  }
  const vms = vmsPattern(flags.vm ?? [])
  const xapi = await xapiTarget(flags.xapi, flags)
  const jobId = flags.jobId ?? 'cli'
  // the key of encrypted --remote targets (sealed with the task before it reaches Redis)
  const encryptionKey = await cliEncryptionKey(flags, flags.remote ?? [])
  const options = encryptionKey === undefined ? {} : { options: { encryptionKey } }
  const remotes: Record<string, { url: string; options?: { encryptionKey: string } }> = {}
  for (const url of flags.remote ?? []) remotes[remoteIdOf(url)] = { url: await remoteUrlWithSecret(url, flags), ...options }
  return {
    kind: 'backup.run',
    job: { id: jobId, name: `backup-proxy CLI (${jobId})`, mode: flags.mode as 'delta' | 'full', vms: vms, settings: { '': {} } },
    schedule: { id: flags.schedule ?? 'cli' },
    remotes,
    xapis: { xapi0: { url: xapi.url, credentials: { username: xapi.username, password: xapi.password }, allowUnauthorized: flags.allowUnauthorized === true } },
  }
}

/**
 * A stable id for a `--remote` URL (metrics label it, the task log names it): a short hash of the URL
 * without its secrets or options, the same on every run (an XO task file keeps XO's remote ids).
 */
function remoteIdOf(url: string): string {
  return `cli-${createHash('sha256').update(redactString(url).replace(/\?.*$/s, '')).digest('hex').slice(0, 12)}`
}

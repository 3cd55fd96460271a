/**
 * Shared fixture of the backup tests: a XAPI simulator, local remotes in temp dirs, a backup.run task
 * builder, and independent checks (qemu-img, vhdiinfo) of what lands on a remote.
 */
import { execFile } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { promisify } from 'node:util'
import { backupSchema } from '../../../src/config/schema.js'
import { parseTask, type BackupRunTask } from '../../../src/queue/tasks.js'
import { startXapiSimulator, type XapiSimulator, type XapiSimulatorOptions } from '../../../src/xapi/sim/index.js'

export const execFileAsync = promisify(execFile)
export const MiB = 1024 * 1024

export const defaults = backupSchema.parse({})

export async function startSim(options: Partial<XapiSimulatorOptions> = {}): Promise<XapiSimulator> {
  return startXapiSimulator({ vms: 1, disksPerVm: 1, diskSizeBytes: 32 * MiB, fillRatio: 0.5, seed: 42, ...options })
}

type TestRemote = string | { url: string; options?: Record<string, unknown> }

export function runTask(sim: XapiSimulator, vmUuids: string[], remotes: Record<string, TestRemote>, settings: Record<string, unknown> = {}, jobId = 'job1'): BackupRunTask {
  return parseTask({
    kind: 'backup.run',
    job: { id: jobId, name: 'test job', mode: 'delta', vms: { uuid: vmUuids }, settings: { '': settings } },
    schedule: { id: 'sched1' },
    remotes: Object.fromEntries(Object.entries(remotes).map(([id, r]) => [id, typeof r === 'string' ? { url: r } : r])),
    xapis: { main: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
  }) as BackupRunTask
}

/** Writes the simulator's current raw content of a VDI to a file. */
export async function saveRaw(sim: XapiSimulator, vdiUuid: string, path: string): Promise<void> {
  await pipeline(sim.rawDiskContent(vdiUuid), createWriteStream(path))
}

/** `qemu-img compare` exit 0 = identical content. */
export async function qemuCompare(vhdPath: string, rawPath: string): Promise<void> {
  await execFileAsync('qemu-img', ['compare', '-q', '-f', 'vpc', vhdPath, '-F', 'raw', rawPath])
}

export async function vhdiinfo(path: string): Promise<string> {
  return (await execFileAsync('vhdiinfo', [path])).stdout
}

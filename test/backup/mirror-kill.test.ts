/**
 * A mirror killed with SIGKILL midway (a child process, held after some files were copied and before the
 * backup's metadata, while the other VM's copy may be writing a temporary): the target then lists only
 * whole backups (what is half-copied is unlisted: orphans, temporaries). Then run again: the targets
 * hold exactly the source's backups their retention allows, nothing else (`verify --full`: no orphan,
 * no leftover, every chain valid, XO's cache right), and each kept backup restores to the same bytes as
 * the source's backup of that time.
 */
import { spawn } from 'node:child_process'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listBackups } from '../../src/backup/catalog.js'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { inlineCopier, runMirror } from '../../src/backup/mirror.js'
import { restoreDiskToFile } from '../../src/backup/restore.js'
import { runBackup } from '../../src/backup/run.js'
import { verifyRemote } from '../../src/backup/verify.js'
import { parseTask, type BackupMirrorTask } from '../../src/queue/tasks.js'
import { createRemote } from '../../src/remotes/index.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, runTask, startSim } from './helpers/fixture.js'

let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }

beforeAll(async () => {
  sim = await startSim({ vms: 2, seed: 9191, diskSizeBytes: 16 * 1024 * 1024 })
  dir = await makeTempDir('bp-mirror-kill-')
})
afterAll(async () => {
  await sim?.close()
  await dir?.remove()
})

/** Runs the child until it says "holding", then SIGKILLs it; resolves with its output. */
function runAndKill(taskFile: string, holdAfter: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'helpers/mirror-child.ts')], {
      env: { ...process.env, MIRROR_TASK: taskFile, HOLD_AFTER: String(holdAfter) },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('holding\n')) child.kill('SIGKILL')
    })
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    child.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve(out) : reject(new Error(`child ended ${code ?? signal} before holding: ${out} ${err}`))))
  })
}

async function restoreBytes(url: string, vmUuid: string, vdiUuid: string, at: string): Promise<Buffer> {
  const remote = createRemote(url)
  await remote.open()
  try {
    const out = join(dir.path, `r-${Math.random().toString(36).slice(2)}.raw`)
    await restoreDiskToFile(remote, { vmUuid, vdiUuid, at }, out)
    return await readFile(out)
  } finally {
    await remote.close()
  }
}

describe('mirror killed midway', () => {
  it.each([
    ['VhdFile target', false, 3],
    ['VhdDirectory target', true, 4],
  ])('%s: re-run gives exactly the retained backups, chains verify, restores equal the source', async (name, useVhdDirectory, holdAfter) => {
    const root = join(dir.path, useVhdDirectory ? 'dir' : 'file')
    const [src, dst] = [join(root, 'src'), join(root, 'dst')]
    await mkdir(src, { recursive: true })
    await mkdir(dst, { recursive: true })
    const vms = sim.listVms()
    for (let i = 0; i < 4; i++) {
      for (const vm of vms) sim.writeBlocks(vm.uuid, { blocks: 4 })
      const s = await runBackup(runTask(sim, vms.map((v) => v.uuid), { r: `file://${src}` }, { exportRetention: 50 }), { defaults, exporter: runDiskExport, signal: new AbortController().signal })
      expect(s.status).toBe('success')
    }
    const task = { kind: 'backup.mirror', job: { id: 'mirror-k', mode: 'delta', sourceRemote: 'src', settings: { '': { exportRetention: 3 } } }, schedule: { id: 'ks' }, remotes: { src: { url: `file://${src}` }, dst: { url: `file://${dst}`, options: { useVhdDirectory } } } }
    const taskFile = join(root, 'task.json')
    await writeFile(taskFile, JSON.stringify(task))
    const out = await runAndKill(taskFile, holdAfter)
    // killed midway: at least holdAfter files published (the other VM's copy may have published more), not done
    expect(out.match(/^copied /gm)!.length).toBeGreaterThanOrEqual(holdAfter)
    expect(out).not.toContain('done ')
    // nothing visible half-copied: every backup the target lists is whole (its files there, its chains
    // valid); what the kill left behind is unlisted (VHDs without metadata yet, temporaries), which the
    // re-run takes over
    const killed = createRemote(`file://${dst}`)
    await killed.open()
    try {
      const problems = (await verifyRemote(killed, { full: true })).problems
      expect(problems.some((p) => p.kind === 'orphan')).toBe(true) // a VHD copied, its backup's metadata not yet
      expect(problems.filter((p) => !['orphan', 'leftover', 'cache'].includes(p.kind))).toEqual([])
    } finally {
      await killed.close()
    }

    const s = await runMirror(parseTask(task) as BackupMirrorTask, { defaults, copier: inlineCopier, signal: new AbortController().signal })
    expect(s.status, `${name}: ${JSON.stringify(s, null, 1)}`).toBe('success')
    const source = createRemote(`file://${src}`)
    const target = createRemote(`file://${dst}`)
    await source.open()
    await target.open()
    try {
      const report = await verifyRemote(target, { full: true })
      expect(report.problems).toEqual([])
      for (const vm of vms) {
        const want = (await listBackups(source, vm.uuid)).map((b) => b.timestamp).slice(-3)
        expect((await listBackups(target, vm.uuid)).map((b) => b.timestamp)).toEqual(want)
        for (const ts of want) {
          const vdi = vm.vdis[0]!.uuid
          expect((await restoreBytes(`file://${dst}`, vm.uuid, vdi, ts)).equals(await restoreBytes(`file://${src}`, vm.uuid, vdi, ts))).toBe(true)
        }
      }
    } finally {
      await source.close()
      await target.close()
    }
  }, 600_000)
})

/**
 * The backup engine through the queue, as a user drives it: EnqueueClient → BullMQ → ProxyRuntime
 * (builtin processors, Piscina disk threads) → simulator → real remotes (local, plus S3/NFS/SMB when
 * the test setup started them). Covers: full + 3 deltas with retention 2 (restore equal at each kept
 * point), one target failing mid-stream (a full 8 MiB tmpfs) while two succeed and its repair by the
 * next run, cancel, and a proxy killed with SIGKILL whose job another proxy completes.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { listBackups } from '../../src/backup/catalog.js'
import { restoreDiskToFile } from '../../src/backup/restore.js'
import { verifyRemote } from '../../src/backup/verify.js'
import { silentLogger } from '../../src/common/log.js'
import { compileConfig } from '../../src/config/index.js'
import { EnqueueClient } from '../../src/queue/client.js'
import { SealKey } from '../../src/queue/seal.js'
import type { JobSummary } from '../../src/queue/task-log.js'
import type { TaskInputOf } from '../../src/queue/tasks.js'
import { createRemote } from '../../src/remotes/index.js'
import { builtinProcessors } from '../../src/workers/builtin-processors.js'
import { ProxyRuntime } from '../../src/workers/proxy.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { waitFor } from '../helpers/ports.js'
import { makeTempDir } from '../helpers/tmp.js'
import { execFileAsync, saveRaw, startSim, MiB } from './helpers/fixture.js'
import { proxyConfig } from './helpers/proxy-config.js'

const sealText = SealKey.generate().export()
const sealKey = SealKey.fromString(sealText)
let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }
let client: EnqueueClient
const proxies: ProxyRuntime[] = []
const redisUrl = inject('redisUrl')

/** Attempts ended on the in-process proxies, as the jobs metric counts them. */
const jobEnds: { kind: string; status: string }[] = []

async function startProxy(id: string): Promise<ProxyRuntime> {
  const p = new ProxyRuntime({
    config: compileConfig(proxyConfig(redisUrl, sealText, id)),
    processors: builtinProcessors({ standIns: false }),
    sealKey,
    logger: silentLogger,
    onJobEnd: ({ kind, status }) => jobEnds.push({ kind, status }),
  })
  await p.start()
  proxies.push(p)
  return p
}

function task(jobId: string, vm: string, remotes: Record<string, { url: string; options?: { useVhdDirectory?: boolean } }>, settings: Record<string, number> = {}): TaskInputOf<'backup.run'> {
  return {
    kind: 'backup.run',
    job: { id: jobId, name: jobId, mode: 'delta', vms: { uuid: [vm] }, settings: { '': settings } },
    schedule: { id: 's1' },
    remotes,
    xapis: { sim: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
  }
}

/** `s3+http://…/bucket/dir?opts#region` + `sub` → `…/bucket/dir/sub?opts#region` */
function withSubdir(url: string, sub: string): string {
  const i = url.search(/[?#]/)
  const [base, rest] = i === -1 ? [url, ''] : [url.slice(0, i), url.slice(i)]
  return `${base.replace(/\/$/, '')}/${sub}${rest}`
}

const vmResult = (s: JobSummary) => s.tasks?.[0]?.result as { timestamp: string; full: boolean; succeeded: string[]; failed: string[] }

beforeAll(async () => {
  sim = await startSim({ vms: 4, seed: 9090, diskSizeBytes: 32 * MiB })
  dir = await makeTempDir('bp-queue-')
  client = new EnqueueClient({ redis: compileConfig(proxyConfig(redisUrl, sealText, 'x')).redis, sealKey, attempts: 1 })
  await startProxy('bk-main')
})
afterAll(async () => {
  await client?.close()
  for (const p of proxies) await p.shutdown({ force: true })
  await sim?.close()
  await dir?.remove()
})

// real work bound by CPU, not waits: the tests make several backup runs to every remote and restore
// them; beside two CPU burners (load 25 on 2 cores) the first one took over the suite's 60 s (its siblings
// up to 45 s), so the bound is 5 minutes
describe('backup.run through the queue', { timeout: 300_000 }, () => {
  it('full + 3 deltas, retention 2, on local (file and directory) and the test servers: restores equal the source', async () => {
    const vm = sim.listVms()[0]!
    const vdi = vm.vdis[0]!
    const sub = `bp-backup-${randomBytes(3).toString('hex')}`
    await mkdir(join(dir.path, 'l1'))
    await mkdir(join(dir.path, 'l2'))
    const remotes: Record<string, { url: string; options?: { useVhdDirectory?: boolean } }> = {
      file: { url: `file://${dir.path}/l1` },
      dirs: { url: `file://${dir.path}/l2`, options: { useVhdDirectory: true } },
    }
    const s3 = inject('s3Url')
    if (s3 !== null) remotes.s3 = { url: withSubdir(s3, sub) }
    const nfs = inject('nfsUrl')
    const smb = inject('smbUrl')
    for (const base of [nfs, smb]) {
      if (base === null) continue
      const r = createRemote(base)
      await r.open()
      await r.mkdir(sub)
      await r.close()
    }
    if (nfs !== null) remotes.nfs = { url: `${nfs.replace(/\/$/, '')}/${sub}` }
    // XO's smb URL: the sub-directory follows the NUL
    if (smb !== null) remotes.smb = { url: `${smb}${smb.endsWith('\0') ? '' : '\\'}${sub}` }
    const rawAt = new Map<string, string>()
    for (let i = 0; i < 4; i++) {
      if (i > 0) sim.writeBlocks(vm.uuid, { blocks: 3 })
      const h = await client.enqueue({ proxy: 'bk-main' }, task('chain', vm.uuid, remotes, { exportRetention: 2 }))
      const s = await h.result()
      expect(s.status, JSON.stringify(s.tasks, null, 1)).toBe('success')
      const r = vmResult(s)
      expect(r.full).toBe(i === 0)
      expect(r.succeeded, JSON.stringify(s.tasks?.[0]?.tasks?.map((t) => [t.data, t.warnings, t.result]))).toEqual(Object.keys(remotes).sort())
      const raw = join(dir.path, `raw-${r.timestamp}`)
      await saveRaw(sim, vdi.uuid, raw)
      rawAt.set(r.timestamp, raw)
    }
    for (const [id, r] of Object.entries(remotes)) {
      const remote = createRemote(r.url, r.options ?? {})
      await remote.open()
      try {
        const backups = await listBackups(remote, vm.uuid)
        expect(backups.map((b) => b.timestamp), id).toEqual([...rawAt.keys()].slice(2))
        expect((await verifyRemote(remote, { vmUuid: vm.uuid, full: true })).problems, id).toEqual([])
        for (const b of backups) {
          const out = join(dir.path, `restored-${id}-${b.timestamp}.raw`)
          await restoreDiskToFile(remote, { vmUuid: vm.uuid, vdiUuid: vdi.uuid, at: b.timestamp }, out)
          expect((await readFile(out)).equals(await readFile(rawAt.get(b.timestamp)!)), `${id} ${b.timestamp}`).toBe(true)
        }
      } finally {
        await remote.close()
      }
    }
  })

  it('one target failing mid-stream: the others complete, the run ends in failure naming the target; the next run repairs it', async (ctx) => {
    const vm = sim.listVms()[1]!
    const small = join(dir.path, 'small')
    await mkdir(small)
    try {
      await execFileAsync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', small])
    } catch {
      ctx.skip() // needs root (mount); CI runs as root
    }
    try {
      await mkdir(join(dir.path, 'g1'))
      await mkdir(join(dir.path, 'g2'))
      const remotes = { g1: { url: `file://${dir.path}/g1` }, g2: { url: `file://${dir.path}/g2` }, small: { url: `file://${small}` } }
      const h = await client.enqueue({ proxy: 'bk-main' }, task('fail', vm.uuid, remotes))
      const s = await h.result()
      // XO's shape: the VM task holds the backup (on g1, g2), the export subtask of 'small' ended in failure,
      // and the run ends in failure so that status, exit code and metrics show it
      expect(s.status).toBe('failure')
      expect(await h.state()).toBe('failed')
      expect(s.error).toMatchObject({ code: 'E_BACKUP', message: expect.stringContaining(`VM ${vm.uuid} on small`) as unknown })
      expect(vmResult(s)).toMatchObject({ succeeded: ['g1', 'g2'], failed: ['small'] })
      const exports = s.tasks?.[0]?.tasks?.filter((t) => t.message === 'export') ?? []
      expect(exports.map((t) => [(t.data as { id: string }).id, t.status]).sort()).toEqual([['g1', 'success'], ['g2', 'success'], ['small', 'failure']])
      expect(JSON.stringify(s)).toMatch(/target small dropped.*ENOSPC|ENOSPC.*target small dropped|no space/i)
      // nothing visible on the failed target: no metadata, no VHD (temporaries were removed)
      const left = await readdir(small, { recursive: true })
      expect(left.filter((n) => n.endsWith('.json') || n.endsWith('.vhd') || n.endsWith('.tmp'))).toEqual([])
      // repair: give it room; the next run is a full on every target (the base is not on 'small')
      await execFileAsync('umount', [small])
      const s2 = await (await client.enqueue({ proxy: 'bk-main' }, task('fail', vm.uuid, remotes))).result()
      expect(s2.status).toBe('success')
      expect(vmResult(s2)).toMatchObject({ full: true, succeeded: ['g1', 'g2', 'small'], failed: [] })
      const s3 = await (await client.enqueue({ proxy: 'bk-main' }, task('fail', vm.uuid, remotes))).result()
      expect(vmResult(s3)).toMatchObject({ full: false, succeeded: ['g1', 'g2', 'small'] })
    } finally {
      await execFileAsync('umount', [small]).catch(() => undefined)
    }
  })

  it('cancel: the run ends interrupted, nothing of it is published', async () => {
    const vm = sim.listVms()[2]!
    await mkdir(join(dir.path, 'c1'))
    sim.setFault({ kind: 'slow', bytesPerSecond: 2 * MiB, vdiUuid: vm.vdis[0]!.uuid })
    try {
      const h = await client.enqueue({ proxy: 'bk-main' }, task('cancel', vm.uuid, { c1: { url: `file://${dir.path}/c1` } }))
      let seen = 0
      h.onProgress((p) => (seen = p.doneBytes ?? 0))
      await h.ready()
      await waitFor('export bytes', () => seen > 0, 120_000)
      const ended = jobEnds.length
      await h.cancel()
      const s = await h.result().catch((e: unknown) => e as JobSummary)
      expect(s.status).toBe('interrupted')
      expect(s.error?.code).toBe('E_CANCELLED')
      // an operator's cancel is not a failure: not a failed job in the queue, not status="failure" in the metric
      expect(await h.state()).toBe('completed')
      // counted as cancelled (an operator's act), apart from interrupted (timeout, shutdown)
      expect(jobEnds.slice(ended)).toEqual([{ kind: 'backup.run', status: 'cancelled' }])
      const files = await readdir(join(dir.path, 'c1'), { recursive: true })
      expect(files.filter((n) => n.endsWith('.json') || n.endsWith('.vhd'))).toEqual([])
      await waitFor('temporaries removed', async () => (await readdir(join(dir.path, 'c1'), { recursive: true })).every((n) => !n.endsWith('.tmp')), 60_000)
      // no empty directory of the cancelled backup is left (vdis/<job>/<vdi>/ ... up to the VM's)
      const dirs = (await readdir(join(dir.path, 'c1'), { recursive: true, withFileTypes: true })).filter((e) => e.isDirectory() && e.name !== 'xo-vm-backups')
      const empty = []
      for (const d of dirs) if ((await readdir(join(d.parentPath, d.name))).length === 0) empty.push(join(d.parentPath, d.name).slice(dir.path.length))
      expect(empty).toEqual([])
    } finally {
      sim.clearFaults()
    }
  })

  it('a proxy killed with SIGKILL mid-run: nothing partial is visible, another proxy completes the job', async () => {
    const vm = sim.listVms()[3]!
    const vdi = vm.vdis[0]!
    const target = join(dir.path, 'k1')
    await mkdir(target)
    // the first export stalls after 6 MiB (a few blocks), so the kill always lands mid-stream however fast the machine is
    sim.setFault({ kind: 'stall', afterBytes: 6 * MiB, vdiUuid: vdi.uuid, times: 1 })
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'helpers/proxy-child.ts')], {
      env: { ...process.env, REDIS_URL: redisUrl, SEAL_KEY: sealText, PROXY_ID: 'bk-kill' },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    try {
      // a process started from sources under tsx: at a load of 31 on 2 cores it was not ready within 30 s
      await waitFor('child proxy ready', () => out.includes('ready'), 180_000)
      const h = await client.enqueue({ proxy: 'bk-kill' }, task('kill', vm.uuid, { k1: { url: `file://${target}` } }))
      let seen = 0
      h.onProgress((p) => (seen = p.doneBytes ?? 0))
      await h.ready()
      await waitFor('export bytes', () => seen > 0, 120_000)
      child.kill('SIGKILL')
      await new Promise((r) => child.once('exit', r))
      const visible = (await readdir(target, { recursive: true })).filter((n) => n.endsWith('.json') || (n.endsWith('.vhd') && !n.split('/').pop()!.startsWith('.')))
      expect(visible).toEqual([])
      // another instance of the proxy takes the stalled job over and completes it
      await startProxy('bk-kill')
      const s = await h.result()
      expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
      const raw = join(dir.path, 'raw-kill')
      await saveRaw(sim, vdi.uuid, raw)
      const remote = createRemote(`file://${target}`)
      await remote.open()
      try {
        expect((await verifyRemote(remote, { full: true })).problems).toEqual([])
        await restoreDiskToFile(remote, { vmUuid: vm.uuid, vdiUuid: vdi.uuid }, join(dir.path, 'restored-kill.raw'))
        expect((await readFile(join(dir.path, 'restored-kill.raw'))).equals(await readFile(raw))).toBe(true)
      } finally {
        await remote.close()
      }
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL')
      sim.clearFaults()
    }
  })
})

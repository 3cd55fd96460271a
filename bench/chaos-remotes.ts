/**
 * The `remote-faults` chaos scenario, over real backup runs (XAPI simulator, `backup-proxy serve` with the
 * real engine): one VM backed up to three targets, two local directories and a broken one, which is
 * - `smb`: a private Samba server (test/services/smb.ts) SIGKILLed mid-write, then started again on the
 *   same share and port;
 * - `nfs`: NFS-Ganesha in its network namespace (test/services/nfs.ts) SIGKILLed mid-write, restarted;
 * - `s3`: the S3 endpoint (Swift's proxy server, test/services/s3.ts) SIGKILLed mid-write, restarted;
 * - `full`: a local directory on an 8 MiB tmpfs, full before the disk is written, then grown to 256 MiB.
 * The export (32 MiB of data) is slowed to 4 MiB/s and the kill comes while the job runs, once a
 * temporary is on the target (on S3, once an object of the run is: a VHD directory has no temporary)
 * or 12 MiB were read. What
 * must hold: the run ends `failure` (E_BACKUP naming the VM and the broken target), both local targets
 * hold the backup; once the server is back the job's next run succeeds on all three, and the broken
 * target is clean: `verify --full` finds no problem and no temporary (nor, on S3, unfinished multipart
 * upload) is left.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3'
import { verifyRemote } from '../src/backup/verify.js'
import { EnqueueClient } from '../src/queue/client.js'
import type { JobSummary } from '../src/queue/task-log.js'
import { SealKey } from '../src/queue/seal.js'
import type { TaskInputOf } from '../src/queue/tasks.js'
import { createRemote } from '../src/remotes/index.js'
import type { RemoteOptions } from '../src/remotes/url-types.js'
import { startXapiSimulator, type XapiSimulator } from '../src/xapi/sim/index.js'
import { startNFSDetailed } from '../test/services/nfs.js'
import { startSwift } from '../test/services/s3.js'
import { lock445, startSambaServer, type SambaServer } from '../test/services/smb.js'
import { startServe, stopServe, waitUntil } from './chaos-lib.js'

const run = promisify(execFile)
const MiB = 1024 * 1024

export type RemoteFaultKind = 'smb' | 'nfs' | 's3' | 'full'
export const REMOTE_FAULT_KINDS: readonly RemoteFaultKind[] = ['full', 'smb', 'nfs', 's3']

/** A broken target: where it is, how to break it and mend it, and what it holds that it should not. */
interface BrokenTarget {
  url: string
  options?: RemoteOptions
  /** breaks it mid-write (nothing for `full`: it is full already) */
  kill: () => Promise<void>
  mend: () => Promise<void>
  /** temporaries (and unfinished uploads) on it */
  leftovers: () => Promise<string[]>
  /** the first run's disk is being written to it (default: a temporary is there) */
  writing?: () => Promise<boolean>
  close: () => Promise<void>
}

interface RemoteFaultResult {
  kind: RemoteFaultKind
  /** the run during which the target broke */
  /** the kill came while a temporary (or an unfinished upload) was on the target */
  killedMidWrite: boolean
  first: { status: string; code?: string; namesTarget: boolean; succeeded: string[]; failed: string[] }
  leftoversBeforeNextRun: number
  next: { status: string; succeeded: string[] }
  verifyProblems: Record<string, string[]>
  leftoversAfterNextRun: string[]
  ok: boolean
}

const hostTemporaries = async (dir: string) => (await readdir(dir, { recursive: true })).filter((p) => p.split('/').pop()!.startsWith('.') && p.includes('.tmp'))

async function brokenTarget(kind: RemoteFaultKind, work: string): Promise<BrokenTarget> {
  if (kind === 'full') {
    const dir = join(work, 'small')
    await mkdir(dir)
    await run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', dir])
    return {
      url: `file://${dir}`,
      kill: () => Promise.resolve(),
      mend: async () => void (await run('mount', ['-o', 'remount,size=256m', dir])),
      leftovers: () => hostTemporaries(dir),
      close: async () => void (await run('umount', [dir]).catch(() => undefined)),
    }
  }
  if (kind === 'smb') {
    // a task's SMB URL has no port (XO's form): the server must be on 445, shared by every test run
    // through the suite's lock (waits while another run holds it)
    const unlock = await lock445(30 * 60_000)
    try {
      let s: SambaServer = await startSambaServer({ port: 445 })
      const { shareDir, password } = s
      return {
        url: s.url,
        kill: () => s.kill(),
        mend: async () => void (s = await startSambaServer({ port: 445, shareDir, password })),
        leftovers: () => hostTemporaries(shareDir),
        close: () => s.stop().finally(unlock),
      }
    } catch (error) {
      unlock()
      throw error
    }
  }
  if (kind === 'nfs') {
    const s = await startNFSDetailed()
    return { url: s.url, kill: () => s.kill(), mend: () => s.restart(), leftovers: () => hostTemporaries(s.exportDir), close: () => s.stop() }
  }
  const s = await startSwift()
  const prefix = new URL(s.url.replace(/^s3\+http/, 'http')).pathname.split('/').slice(2).join('/')
  return {
    url: s.url,
    // S3's smallest part: the upload is under way after 5 MiB
    options: { uploadPartSizeBytes: 5 * MiB },
    kill: () => s.killProxy(),
    mend: () => s.restartProxy(),
    // a VHD directory (XO's default on S3: one object per block) has no temporary: any object of the first run
    writing: async () => ((await s.client.send(new ListObjectsV2Command({ Bucket: s.bucket, Prefix: prefix }))).KeyCount ?? 0) > 0,
    leftovers: async () => {
      const uploads = await s.client.send(new ListMultipartUploadsCommand({ Bucket: s.bucket, Prefix: prefix }))
      const objects = await s.client.send(new ListObjectsV2Command({ Bucket: s.bucket, Prefix: prefix }))
      return [...(uploads.Uploads ?? []).map((u) => `upload ${u.Key}`), ...(objects.Contents ?? []).map((o) => o.Key ?? '').filter((k) => k.split('/').pop()!.startsWith('.'))]
    },
    close: () => s.stop(),
  }
}

function task(sim: XapiSimulator, jobId: string, vmUuid: string, remotes: Record<string, { url: string; options?: RemoteOptions }>): TaskInputOf<'backup.run'> {
  return {
    kind: 'backup.run',
    job: { id: jobId, name: `chaos ${jobId}`, mode: 'delta', vms: { uuid: [vmUuid] }, settings: { '': { exportRetention: 3 } } },
    schedule: { id: 'chaos' },
    remotes,
    xapis: { sim: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
  }
}

const vmResult = (s: JobSummary) => (s.tasks?.[0]?.result ?? {}) as { succeeded?: string[]; failed?: string[] }

async function verifyTarget(url: string, options: RemoteOptions | undefined): Promise<string[]> {
  const remote = createRemote(url, options ?? {})
  await remote.open()
  try {
    return (await verifyRemote(remote, { full: true })).problems.map((p) => `${p.kind} ${p.path}: ${p.message}`)
  } finally {
    await remote.close()
  }
}

/** One kind of broken target; `redisUrl` is a Redis the scenario may use (a private one in the runner). */
export async function remoteFault(kind: RemoteFaultKind, o: { redisUrl: string; work: string }): Promise<RemoteFaultResult> {
  const seal = SealKey.generate()
  const sim = await startXapiSimulator({ vms: 1, disksPerVm: 1, diskSizeBytes: 64 * MiB, fillRatio: 0.5, seed: 77 })
  const broken = await brokenTarget(kind, o.work)
  const proxy = `chaos-remote-${kind}-${randomBytes(3).toString('hex')}`
  const serve = startServe({ redisUrl: o.redisUrl, proxyId: proxy, seal: seal.export(), concurrency: 2, env: { BACKUP_PROXY_WORKERS_LOCK_DURATION_MS: '30000', BACKUP_PROXY_WORKERS_STALLED_INTERVAL_MS: '15000' } })
  const client = new EnqueueClient({ redis: { mode: 'single', url: o.redisUrl, nodes: [], sentinels: [], prefix: 'bull', tlsRejectUnauthorized: true }, sealKey: seal, attempts: 1 })
  try {
    const vm = sim.listVms()[0]!
    const locals = ['local-a', 'local-b']
    for (const l of locals) await mkdir(join(o.work, l), { recursive: true })
    const remotes = { ...Object.fromEntries(locals.map((l) => [l, { url: `file://${join(o.work, l)}` }])), [kind]: { url: broken.url, ...(broken.options === undefined ? {} : { options: broken.options }) } }
    const t = task(sim, proxy, vm.uuid, remotes)
    sim.setFault({ kind: 'slow', bytesPerSecond: 4 * MiB, vdiUuid: vm.vdis[0]!.uuid })
    const h = await client.enqueue({ proxy }, t)
    // mid-write: a temporary (or an unfinished upload) is on the target, or 12 MiB of the 32 were read
    // (the job's progress, read from Redis: S3 may list no upload while its first parts are sent)
    const readBytes = async () => ((await client.queue(h.queue).getJob(h.id))?.progress as { doneBytes?: number } | undefined)?.doneBytes ?? 0
    const writing = broken.writing ?? (async () => (await broken.leftovers()).length > 0)
    const midWrite = async () => ((await writing()) || (await readBytes()) >= 12 * MiB) && (await h.state()) === 'active'
    await waitUntil(async () => (await midWrite()) || ['completed', 'failed'].includes(await h.state()), 10 * 60_000)
    const killedMidWrite = await midWrite()
    await broken.kill()
    const s1 = await h.result(AbortSignal.timeout(15 * 60_000))
    sim.clearFaults()
    await broken.mend()
    const leftoversBeforeNextRun = (await broken.leftovers()).length
    const s2 = await (await client.enqueue({ proxy }, t)).result(AbortSignal.timeout(15 * 60_000))
    const verifyProblems: Record<string, string[]> = {}
    for (const [id, r] of Object.entries(remotes)) verifyProblems[id] = await verifyTarget(r.url, 'options' in r ? r.options : undefined)
    const leftoversAfterNextRun = await broken.leftovers()
    const first = { status: s1.status, ...(s1.error?.code === undefined ? {} : { code: s1.error.code }), namesTarget: (s1.error?.message ?? '').includes(`on ${kind}`), succeeded: vmResult(s1).succeeded ?? [], failed: vmResult(s1).failed ?? [] }
    const next = { status: s2.status, succeeded: vmResult(s2).succeeded ?? [] }
    return {
      kind, killedMidWrite, first, leftoversBeforeNextRun, next, verifyProblems, leftoversAfterNextRun,
      ok: killedMidWrite && first.status === 'failure' && first.code === 'E_BACKUP' && first.namesTarget && locals.every((l) => first.succeeded.includes(l)) && first.failed.includes(kind) &&
        next.status === 'success' && next.succeeded.length === 3 && Object.values(verifyProblems).every((p) => p.length === 0) && leftoversAfterNextRun.length === 0,
    }
  } finally {
    await stopServe(serve, 'SIGKILL')
    await client.close().catch(() => undefined)
    await broken.close().catch(() => undefined)
    await sim.close()
  }
}

/**
 * Test server: NFS-Ganesha 4.3 (VFS backend) + rpcbind, both inside a private network namespace reached
 * over a veth pair (neither daemon can share the host's
 * loopback here). Started once per test run by test/setup/global.ts, and by bench/remote-nfs.bench.ts.
 *
 * Every instance gets its own netns (`bpnfs-<id>`), veth pair and /30 inside 10.213.77.0/24, reserved by
 * an atomic mkdir under /tmp/bp-nfs-subnets so a test run and a bench run can coexist. Both daemons run
 * in one `sh` inside the netns and a private mount namespace with its own tmpfs /run (rpcbind's socket
 * and lock are fixed paths there). `stop()` kills that process group, deletes the netns (which removes
 * the veth pair), frees the reservation and the temp dir — also when startup failed half way.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { waitFor } from '../helpers/ports.js'
import { startDaemon, type Daemon } from '../helpers/process.js'

const run = promisify(execFile)

export interface NFSService {
  /** remote URL in XO format, pointing at a fresh empty directory for the run */
  url: string
  stop: () => Promise<void>
}

export interface NFSServiceDetails extends NFSService {
  /** server address inside the netns */
  host: string
  /** export pseudo path (what MOUNT takes) */
  exportPath: string
  /** directory on this host that Ganesha exports (read it, never delete in it: see the notes) */
  exportDir: string
  /** kills the daemons (SIGKILL) without tearing the netns down; `restart()` brings them back */
  kill: () => Promise<void>
  restart: () => Promise<void>
  /** user+sys CPU seconds used so far by the running daemons (Ganesha + rpcbind), from /proc */
  serverCpuSeconds: () => Promise<number>
}

interface NFSServiceOptions {
  /** parent of the temp dir holding config, logs and the export (default os.tmpdir(); /dev/shm for benches) */
  baseDir?: string
}

const RESERVATIONS = '/tmp/bp-nfs-subnets'
const EXPORT_PATH = '/export/backups'

async function ip(...args: string[]): Promise<string> {
  return (await run('ip', args)).stdout
}

async function netnsExists(name: string): Promise<boolean> {
  return (await ip('netns', 'list')).split('\n').some((l) => l.split(' ')[0] === name)
}

/** Reserves a free /30 of 10.213.77.0/24 for `netns`; stale reservations (netns gone) are reclaimed. */
async function reserveSubnet(netns: string): Promise<{ index: number; release: () => Promise<void> }> {
  await mkdir(RESERVATIONS, { recursive: true })
  const hostAddrs = await ip('-4', 'addr')
  for (let index = 0; index < 64; index++) {
    const base = index * 4
    if (hostAddrs.includes(`10.213.77.${base + 1}/`) || hostAddrs.includes(`10.213.77.${base + 2}/`)) continue
    const dir = join(RESERVATIONS, String(index))
    try {
      await mkdir(dir)
    } catch {
      // a reservation is stale when its netns is gone and it is not brand new (its owner may not have created it yet)
      const owner = await readFile(join(dir, 'netns'), 'utf8').catch(() => '')
      const ageMs = Date.now() - (await stat(dir).then((s) => s.mtimeMs).catch(() => Date.now()))
      if (owner === '' || ageMs < 120_000 || (await netnsExists(owner))) continue
      await rm(dir, { recursive: true, force: true })
      try {
        await mkdir(dir)
      } catch {
        continue
      }
    }
    await writeFile(join(dir, 'netns'), netns)
    return { index, release: () => rm(dir, { recursive: true, force: true }) }
  }
  throw new Error(`no free /30 left in 10.213.77.0/24 (see ${RESERVATIONS}: ${(await readdir(RESERVATIONS)).join(', ')})`)
}

/** Live (not zombie) processes of process group `pgid`, from /proc. */
async function groupMembers(pgid: number): Promise<number[]> {
  const out: number[] = []
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ') // state ppid pgrp ...
    if (fields[2] === String(pgid) && fields[0] !== 'Z' && fields[0] !== 'X') out.push(Number(name))
  }
  return out
}

/** user+sys CPU seconds of the live processes of group `pgid` (clock ticks are 100 Hz on Linux). */
async function groupCpuSeconds(pgid: number): Promise<number> {
  let ticks = 0
  for (const pid of await groupMembers(pgid)) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    ticks += Number(fields[11] ?? 0) + Number(fields[12] ?? 0) // utime stime
  }
  return ticks / 100
}

/** Waits until no process of the group is alive; SIGKILLs the group after `timeoutMs`. */
async function waitGroupGone(pgid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while ((await groupMembers(pgid)).length > 0) {
    if (Date.now() > deadline) {
      try {
        process.kill(-pgid, 'SIGKILL')
      } catch {
        // already gone
      }
      await new Promise((r) => setTimeout(r, 200))
      return
    }
    await new Promise((r) => setTimeout(r, 100))
  }
}

function ganeshaConf(dir: string): string {
  return `NFS_CORE_PARAM { Protocols = 3, 4; NFS_Port = 2049; MNT_Port = 20048; Enable_NLM = false;
  Enable_RQUOTA = false; Enable_UDP = false; mount_path_pseudo = true; }
NFSV4 { Graceless = true; RecoveryRoot = "${dir}/recovery"; }
EXPORT { Export_Id = 1; Path = "${dir}/export"; Pseudo = "${EXPORT_PATH}"; Access_Type = RW;
  Squash = No_Root_Squash; SecType = sys; Protocols = 3, 4; Transports = TCP;
  Attr_Expiration_Time = 0; FSAL { Name = VFS; } }
LOG { Default_Log_Level = WARN; }
`
}

export async function startNFSDetailed(options: NFSServiceOptions = {}): Promise<NFSServiceDetails> {
  const id = randomBytes(3).toString('hex')
  const netns = `bpnfs-${id}`
  const vethHost = `bpnfs${id}h`
  const vethNs = `bpnfs${id}n`
  const dir = await mkdtemp(join(options.baseDir ?? tmpdir(), 'bp-nfs-'))
  const cleanups: (() => Promise<unknown>)[] = [() => rm(dir, { recursive: true, force: true })]
  let daemon: Daemon | undefined
  const stopDaemons = async (signal: NodeJS.Signals) => {
    const d = daemon
    daemon = undefined
    const pgid = d?.child.pid
    await d?.stop(signal, 5_000)
    // the shell exits at once, Ganesha takes seconds to finish on SIGTERM: wait for the whole group
    if (pgid !== undefined) await waitGroupGone(pgid, 10_000)
  }
  const stop = async () => {
    await stopDaemons('SIGTERM')
    for (const c of cleanups.reverse()) await c().catch(() => undefined)
    cleanups.length = 0
  }
  try {
    const subnet = await reserveSubnet(netns)
    cleanups.push(subnet.release)
    const host = `10.213.77.${subnet.index * 4 + 2}`
    const hostSide = `10.213.77.${subnet.index * 4 + 1}`
    await mkdir(join(dir, 'export'))
    await mkdir(join(dir, 'recovery'))
    await writeFile(join(dir, 'ganesha.conf'), ganeshaConf(dir))

    await ip('netns', 'add', netns)
    cleanups.push(async () => ip('netns', 'del', netns))
    await ip('link', 'add', vethHost, 'type', 'veth', 'peer', 'name', vethNs)
    cleanups.push(async () => ip('link', 'del', vethHost).catch(() => '')) // gone with the netns normally
    await ip('link', 'set', vethNs, 'netns', netns)
    await ip('addr', 'add', `${hostSide}/30`, 'dev', vethHost)
    await ip('link', 'set', vethHost, 'up')
    await ip('netns', 'exec', netns, 'ip', 'link', 'set', 'lo', 'up')
    await ip('netns', 'exec', netns, 'ip', 'addr', 'add', `${host}/30`, 'dev', vethNs)
    await ip('netns', 'exec', netns, 'ip', 'link', 'set', vethNs, 'up')

    const startOnce = async (timeoutMs: number) => {
      daemon = startDaemon('ip', [
        'netns', 'exec', netns, 'unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c',
        'mount -t tmpfs tmpfs /run && mkdir /run/rpcbind && chown _rpc /run/rpcbind && ' +
          `{ rpcbind -f -w & ganesha.nfsd -F -f "${dir}/ganesha.conf" -L "${dir}/ganesha.log" -p /run/ganesha.pid & wait; }`,
      ])
      const d = daemon
      await waitFor(
        `NFS-Ganesha in netns ${netns}`,
        async () => {
          if (d.child.exitCode !== null) throw new Error(`the daemons exited (${d.child.exitCode}): ${d.output()}`)
          // rpcinfo alone is not enough: Ganesha registers before its export is ready
          const { stdout } = await run('rpcinfo', ['-p', host])
          if (!/100005\s+3\s+tcp/.test(stdout) || !/100003\s+3\s+tcp/.test(stdout)) return false
          await run('nfs-ls', [`nfs://${host}${EXPORT_PATH}?version=3`], { timeout: 5_000 })
          return true
        },
        timeoutMs,
        250,
      ).catch(async (error: unknown) => {
        const log = await readFile(join(dir, 'ganesha.log'), 'utf8').catch(() => '(no ganesha.log)')
        const listening = await ip('netns', 'exec', netns, 'ss', '-ltnp').catch((e: unknown) => String(e))
        const members = d.child.pid === undefined ? [] : await groupMembers(d.child.pid)
        const procs = await Promise.all(members.map(async (pid) => `${pid}: ${(await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '?')).replaceAll('\0', ' ')}`))
        throw new Error(
          `${(error as Error).message}\ndaemon output: ${d.output() || '(none)'}\nprocesses: ${procs.join('; ') || '(none)'}\nlistening in the netns:\n${listening}\nganesha.log (tail): ${log.slice(-3000)}`,
          { cause: error },
        )
      })
    }
    // Rarely (twice in dozens of starts on a machine at load 20, not reproduced alone) nothing listened
    // on :111 in the netns after 60 s: retry once with fresh daemons, and keep the diagnostics of both.
    const start = async () => {
      try {
        await startOnce(30_000)
      } catch (first) {
        await stopDaemons('SIGKILL')
        try {
          await startOnce(60_000)
        } catch (second) {
          throw new AggregateError([first, second], `NFS-Ganesha did not start in netns ${netns} (2 attempts): ${(second as Error).message}`, { cause: second })
        }
        console.error(`NFS test server: first start attempt failed, the second worked: ${(first as Error).message}`)
      }
    }
    await start()
    return {
      url: `nfs://${host}:${EXPORT_PATH}`,
      host,
      exportPath: EXPORT_PATH,
      exportDir: join(dir, 'export'),
      stop,
      kill: () => stopDaemons('SIGKILL'),
      serverCpuSeconds: async () => (daemon?.child.pid === undefined ? 0 : groupCpuSeconds(daemon.child.pid)),
      restart: start,
    }
  } catch (error) {
    await stop()
    throw error
  }
}

export async function startNFS(options: NFSServiceOptions = {}): Promise<NFSService> {
  const s = await startNFSDetailed(options)
  return { url: s.url, stop: s.stop }
}

/**
 * Test server: SMB (Samba smbd), run in the foreground from a private temp dir. `startSMB()` is called once per test run by test/setup/global.ts
 * and serves 127.0.0.1:445 (XO's smb:// URL has no port); `startSambaServer()` starts extra private
 * servers on free ports for tests that kill the server or require signing.
 *
 * smbd forks a worker per client connection: it is started in its own process group (startDaemon) and
 * stopped by signalling the whole group.
 */
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import { randomBytes } from 'node:crypto'
import { getFreePort, waitFor } from '../helpers/ports.js'
import { startDaemon } from '../helpers/process.js'

const exec = promisify(execFile)

export interface SMBService {
  /** remote URL in XO format, pointing at a fresh empty directory for the run */
  url: string
  stop: () => Promise<void>
}

export interface SambaServer extends SMBService {
  port: number
  /** smbd's main process */
  pid: number
  /** the share's directory on this host */
  shareDir: string
  username: string
  password: string
  /** SIGKILL the whole process group (simulates a crash) */
  kill: () => Promise<void>
}

interface SambaOptions {
  /** default: a free port (445 for startSMB) */
  port?: number
  /** Samba's `server signing` */
  signing?: 'default' | 'mandatory'
  /** serve this existing directory (a killed server's, or one on tmpfs), writable by uid 34, instead of a fresh one */
  shareDir?: string
  /** the account's password (default: random) */
  password?: string
}

const USER = 'backup' // a Unix user Debian always has (uid 34)

export async function startSambaServer(options: SambaOptions = {}): Promise<SambaServer> {
  const dir = await mkdtemp(join(tmpdir(), 'bp-smb-'))
  const port = options.port ?? (await getFreePort())
  const password = options.password ?? `pw-${randomBytes(6).toString('hex')}`
  const shareDir = options.shareDir ?? join(dir, 'share')
  for (const d of ['pid', 'lock', 'state', 'cache', 'private', 'ncalrpc', 'log']) await mkdir(join(dir, d))
  if (options.shareDir === undefined) {
    await mkdir(shareDir)
    await chmod(dir, 0o755) // smbd serves the share as the user: it must reach the share dir
    await chown(shareDir, 34, 34)
  }
  const conf = join(dir, 'smb.conf')
  await writeFile(
    conf,
    `[global]
  server role = standalone server
  interfaces = 127.0.0.1
  bind interfaces only = yes
  smb ports = ${port}
  disable netbios = yes
  pid directory = ${dir}/pid
  lock directory = ${dir}/lock
  state directory = ${dir}/state
  cache directory = ${dir}/cache
  private dir = ${dir}/private
  ncalrpc dir = ${dir}/ncalrpc
  passdb backend = tdbsam:${dir}/private/passdb.tdb
  log file = ${dir}/log/log.%m
  log level = 1
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  map to guest = never
  server signing = ${options.signing ?? 'default'}
[backups]
  path = ${shareDir}
  read only = no
`,
  )
  const child = startDaemon('sh', ['-c', `printf '%s\\n%s\\n' "$PW" "$PW" | smbpasswd -c ${conf} -s -a ${USER}`], { env: { ...process.env, PW: password } })
  const code = await new Promise<number | null>((resolve) => child.child.on('exit', resolve))
  if (code !== 0) throw new Error(`smbpasswd failed (${code}): ${child.output()}`)
  const daemon = startDaemon('smbd', ['--foreground', '--no-process-group', '--debug-stdout', `--configfile=${conf}`])
  try {
    await waitFor(`smbd on 127.0.0.1:${port}`, async () => {
      if (daemon.child.exitCode !== null) throw new Error(`smbd exited: ${daemon.output()}`)
      await new Promise<void>((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port }, () => {
          s.destroy()
          resolve()
        })
        s.once('error', reject)
      })
      return true
    })
    // the tdb passdb is written by smbpasswd; check that the account logs in (readiness of auth too)
    await exec('smbclient', ['-p', String(port), '-U', `${USER}%${password}`, '//127.0.0.1/backups', '-c', 'ls'], { timeout: 20_000 })
  } catch (error) {
    await daemon.stop('SIGKILL')
    await rm(dir, { recursive: true, force: true })
    throw error
  }
  return {
    url: `smb://${USER}:${password}@WORKGROUP\\\\127.0.0.1\\backups\0`,
    port,
    pid: daemon.child.pid ?? 0,
    shareDir,
    username: USER,
    password,
    kill: () => daemon.stop('SIGKILL'),
    stop: async () => {
      await daemon.stop('SIGTERM')
      await rm(dir, { recursive: true, force: true })
    },
  }
}

/** PIDs listening on 127.0.0.1:port (smbd sets SO_REUSEPORT: two smbds can share a port and split clients). */
async function listeners(port: number): Promise<number[]> {
  const { stdout } = await exec('ss', ['-Hltnp', `sport = :${port}`])
  return [...stdout.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1]))
}

/**
 * Holds an exclusive lock on 127.0.0.1:445 for this test run. Every test run of this project (and
 * every engineer's) starts its own smbd on 445, and smbd binds with SO_REUSEPORT, so two runs would
 * silently share the port and each get the other's LOGON_FAILUREs. The lock is a `flock` child whose
 * stdin is a pipe from this process: it exits (releasing the lock) when we stop it or when we die.
 */
export async function lock445(timeoutMs: number): Promise<() => void> {
  const child = spawn('flock', ['-w', String(Math.ceil(timeoutMs / 1000)), '/tmp/backup-proxy-smb-445.lock', 'sh', '-c', 'echo locked; read _'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve())
    child.once('exit', (code) => reject(new Error(`another test run keeps 127.0.0.1:445 (lock /tmp/backup-proxy-smb-445.lock) busy; gave up after ${timeoutMs} ms (flock exit ${code})`)))
  })
  return () => child.stdin.end()
}

export async function startSMB(): Promise<SMBService | null> {
  const unlock = await lock445(15 * 60_000)
  try {
    // a run of older code (without the lock) may still hold the port: wait for it to go
    await waitFor('127.0.0.1:445 to be free of other smbd processes', async () => (await listeners(445)).length === 0, 10 * 60_000, 1000)
    const server = await startSambaServer({ port: 445 })
    if (!(await listeners(445)).includes(server.pid)) {
      await server.stop()
      throw new Error('our smbd is not the one listening on 127.0.0.1:445')
    }
    return {
      url: server.url,
      stop: async () => {
        try {
          await server.stop()
        } finally {
          unlock()
        }
      },
    }
  } catch (error) {
    unlock()
    throw error
  }
}

/**
 * Test server: SMB (Samba smbd), run in the foreground from a private temp dir (see
 * /work/shared/notes/test-servers.md). `startSMB()` is called once per test run by test/setup/global.ts
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
import { execFile } from 'node:child_process'
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
  /** the share's directory on this host */
  shareDir: string
  username: string
  password: string
  /** SIGKILL the whole process group (simulates a crash) */
  kill: () => Promise<void>
}

export interface SambaOptions {
  /** default: a free port (445 for startSMB) */
  port?: number
  /** Samba's `server signing` */
  signing?: 'default' | 'mandatory'
  /** serve this existing directory (e.g. a killed server's) instead of a fresh one */
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

export async function startSMB(): Promise<SMBService | null> {
  // Port 445 is shared with any other test run on this machine: wait for it rather than fail at once.
  let lastError: unknown
  for (let attempt = 0; attempt < 30; attempt++) {
    try {
      const server = await startSambaServer({ port: 445 })
      return { url: server.url, stop: server.stop }
    } catch (error) {
      lastError = error
      await new Promise((r) => setTimeout(r, 2000))
    }
  }
  throw new Error(`could not start smbd on 127.0.0.1:445: ${lastError instanceof Error ? lastError.message : String(lastError)}`)
}

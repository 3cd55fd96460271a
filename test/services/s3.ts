/**
 * Test server: S3 = OpenStack Swift 2.30 with its s3api middleware (Debian packages), on 127.0.0.1 free
 * ports, storage in a private temp dir (tmpfs when /dev/shm exists). Started once per test run by
 * test/setup/global.ts (`startS3()`), and by bench/remotes.bench.ts (`startSwift()`). It relies on these
 * facts of Swift's s3api (memcache in front of tempauth, slo
 * after s3api for multipart, 10,000 parts, path-style only, access key `test:tester` URL-encoded).
 *
 * Every Swift server forks workers: each runs in its own process group (startDaemon) and is stopped by
 * signalling the group. Readiness is proven by a signed CreateBucket + ListObjects, not /healthcheck.
 */
import { randomBytes } from 'node:crypto'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { CreateBucketCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'
import { getFreePort, waitFor } from '../helpers/ports.js'
import { startDaemon, type Daemon } from '../helpers/process.js'

const exec = promisify(execFile)

export interface S3Service {
  /** remote URL in XO format, pointing at a fresh empty directory for the run */
  url: string
  stop: () => Promise<void>
}

interface SwiftServer extends S3Service {
  /** http://127.0.0.1:PORT */
  endpoint: string
  accessKeyId: string
  secretAccessKey: string
  bucket: string
  /** a client for direct checks (ListMultipartUploads, HeadObject...) */
  client: S3Client
  /** SIGKILLs the proxy server (the S3 endpoint; storage servers stay up); `restartProxy()` brings it back on the same port */
  killProxy: () => Promise<void>
  restartProxy: () => Promise<void>
}

interface SwiftOptions {
  /** proxy workers (default 1); storage servers always run 1 */
  proxyWorkers?: number
}

const ACCESS_KEY = 'test:tester'
const SECRET = 'testing'

function serverConf(dir: string, port: number, app: string, extra = ''): string {
  return `[DEFAULT]
swift_dir = ${dir}
devices = ${dir}/node
mount_check = false
bind_ip = 127.0.0.1
bind_port = ${port}
user = root
log_level = WARNING
workers = 1

[pipeline:main]
pipeline = ${app}-server

[app:${app}-server]
use = egg:swift#${app}
${extra}
[${app}-replicator]
[${app}-auditor]
`
}

function proxyConf(dir: string, port: number, memcachePort: number, workers: number): string {
  return `[DEFAULT]
swift_dir = ${dir}
bind_ip = 127.0.0.1
bind_port = ${port}
user = root
log_level = WARNING
workers = ${workers}

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:${memcachePort}
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
max_upload_part_num = 10000
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = ${SECRET} .admin
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
max_manifest_segments = 10000
[filter:dlo]
use = egg:swift#dlo
`
}

export async function startSwift(options: SwiftOptions = {}): Promise<SwiftServer> {
  const dir = await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'bp-swift-'))
  const daemons: Daemon[] = []
  let client: S3Client | undefined
  const stop = async () => {
    client?.destroy()
    for (const d of daemons.reverse()) await d.stop('SIGTERM', 5000)
    await rm(dir, { recursive: true, force: true })
  }
  try {
    await mkdir(join(dir, 'node', 'd1'), { recursive: true })
    await writeFile(
      join(dir, 'swift.conf'),
      `[swift-hash]\nswift_hash_path_suffix = bp${randomBytes(4).toString('hex')}\nswift_hash_path_prefix = bp\n\n[storage-policy:0]\nname = default\ndefault = yes\n`,
    )
    const [accountPort, containerPort, objectPort, proxyPort, memcachePort] = await Promise.all([getFreePort(), getFreePort(), getFreePort(), getFreePort(), getFreePort()])
    const ports = { account: accountPort, container: containerPort, object: objectPort }
    await Promise.all(
      Object.entries(ports).map(async ([kind, port]) => {
        const builder = join(dir, `${kind}.builder`)
        await exec('swift-ring-builder', [builder, 'create', '0', '1', '1'])
        await exec('swift-ring-builder', [builder, 'add', '--region', '1', '--zone', '1', '--ip', '127.0.0.1', '--port', String(port), '--device', 'd1', '--weight', '100'])
        await exec('swift-ring-builder', [builder, 'rebalance'])
        await writeFile(join(dir, `${kind}-server.conf`), serverConf(dir, port, kind))
      }),
    )
    await writeFile(join(dir, 'proxy-server.conf'), proxyConf(dir, proxyPort, memcachePort, options.proxyWorkers ?? 1))
    daemons.push(startDaemon('memcached', ['-u', 'root', '-l', '127.0.0.1', '-p', String(memcachePort), '-U', '0', '-m', '64']))
    for (const kind of ['account', 'container', 'object', 'proxy']) {
      daemons.push(startDaemon(`/usr/bin/swift-${kind}-server`, [join(dir, `${kind}-server.conf`)]))
    }
    let proxy = daemons[daemons.length - 1]!
    const endpoint = `http://127.0.0.1:${proxyPort}`
    client = new S3Client({
      endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET },
      maxAttempts: 1,
    })
    const bucket = 'backups'
    const c = client
    const ready = () => waitFor(
      `Swift S3 on ${endpoint}: ${daemons.map((d) => d.output()).join('\n').slice(-3000)}`,
      async () => {
        try {
          await c.send(new CreateBucketCommand({ Bucket: bucket }))
        } catch (error) {
          if ((error as { name?: string }).name !== 'BucketAlreadyOwnedByYou' && (error as { name?: string }).name !== 'BucketAlreadyExists') throw error
        }
        await c.send(new ListObjectsV2Command({ Bucket: bucket, MaxKeys: 1 }))
        return true
      },
      60_000,
      250,
    )
    await ready()
    const prefix = `run-${randomBytes(4).toString('hex')}`
    return {
      url: `s3+http://${encodeURIComponent(ACCESS_KEY)}:${SECRET}@127.0.0.1:${proxyPort}/${bucket}/${prefix}#us-east-1`,
      endpoint,
      accessKeyId: ACCESS_KEY,
      secretAccessKey: SECRET,
      bucket,
      client,
      stop,
      killProxy: () => proxy.stop('SIGKILL'),
      restartProxy: async () => {
        await proxy.stop('SIGKILL')
        proxy = startDaemon('/usr/bin/swift-proxy-server', [join(dir, 'proxy-server.conf')])
        daemons.push(proxy)
        await ready()
      },
    }
  } catch (error) {
    await stop()
    throw error
  }
}

export async function startS3(): Promise<S3Service | null> {
  return startSwift()
}

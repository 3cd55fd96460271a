/**
 * The one configuration schema of backup-proxy (zod). Every setting of every component is declared here
 * with its default and a description; the README's configuration reference is generated from it
 * (`npm run docs:config`) and a test fails when the two drift.
 *
 * Naming: keys ending in `Ms` are durations in milliseconds and accept units (`30s`); keys ending in
 * `Bytes` are sizes and accept units (`2GiB`); `...PerSecond` rates are bytes per second and accept sizes.
 * Sources, lowest precedence first: defaults < config file < environment < command-line flags
 * (see load.ts); per-job settings from a task override the `backup` section for that job only.
 */
import { z } from 'zod'
import { parseDurationMs, parseSizeBytes } from '../common/units.js'

/** A duration in ms; accepts a number (ms) or a string with units. */
export type UnitSchema = z.ZodPipe<z.ZodUnion<readonly [z.ZodNumber, z.ZodString]>, z.ZodTransform<number, string | number>>
export function duration(): UnitSchema {
  return z.union([z.number(), z.string()]).transform((v, ctx) => {
    try {
      return parseDurationMs(v)
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: `expected a duration such as 500ms, 30s or 1h (${(e as Error).message})` })
      return z.NEVER
    }
  })
}

/** A size in bytes; accepts a whole number or a string with units. */
export function size(): UnitSchema {
  return z.union([z.number(), z.string()]).transform((v, ctx) => {
    try {
      return parseSizeBytes(v)
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: `expected a size such as 4096, 512KiB or 2GiB (${(e as Error).message})` })
      return z.NEVER
    }
  })
}

/**
 * XO's job `compression`: the compression of the XVA of a full-mode backup ('native' = XAPI's gzip,
 * 'zstd', '' = none). It is not a VhdDirectory codec (that is `vhdDirectoryCompression`); any other
 * value is refused with a message saying so, never replaced by another codec.
 */
export function xvaCompression(): z.ZodEnum<{ '': ''; native: 'native'; zstd: 'zstd' }> {
  return z.enum(['', 'native', 'zstd'], {
    message: "must be '', 'native' or 'zstd' (XO's XVA compression of full-mode backups); the VhdDirectory block compression is backup.vhdDirectoryCompression ('brotli' or 'none')",
  })
}

const intFromEnv = (min: number, max: number) => z.coerce.number().int().min(min).max(max)
const bool = () => z.union([z.boolean(), z.enum(['true', 'false', '1', '0', 'yes', 'no'])]).transform((v) => v === true || v === 'true' || v === '1' || v === 'yes')

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/

export const proxySchema = z
  .object({
    id: z.string().regex(ID_RE, 'letters, digits, ".", "_" and "-", 1-63 characters').default('default').describe('Identifier of this proxy; it serves queue {proxy.<id>} (BullMQ forbids ":" in queue names; the braces are the Redis Cluster hash tag).'),
    pools: z
      .union([z.array(z.string().regex(ID_RE)), z.string()])
      .transform((v) => (typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter((s) => s !== '') : v))
      .pipe(z.array(z.string().regex(ID_RE, 'letters, digits, ".", "_" and "-", 1-63 characters')))
      .default([])
      .describe('Pools this proxy also serves (queue {pool.<name>}); comma-separated in env and flags.'),
  })
  .prefault({})

/** A comma-separated list in env and flags, an array in a file. */
const list = (item: z.ZodString) =>
  z
    .union([z.array(z.string()), z.string()])
    .transform((v) => (typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter((s) => s !== '') : v))
    .pipe(z.array(item))

const HOST_PORT_RE = /^(\[[0-9a-fA-F:]+\]|[^\s:,=]+):\d{1,5}$/
const hostPort = () => z.string().regex(HOST_PORT_RE, 'host:port')

/** `natMap`: announced address -> reachable address; `a:1=b:2,c:3=d:4` in env, a mapping in a file. */
const natMap = () =>
  z
    .union([z.record(z.string(), z.string()), z.string()])
    .transform((v): Record<string, string> => {
      if (typeof v !== 'string') return v
      const entries = v.split(',').map((s) => s.trim()).filter((s) => s !== '').map((pair): [string, string] => {
        const [from = '', to = ''] = pair.split('=').map((x) => x.trim())
        return [from, to]
      })
      return Object.fromEntries(entries)
    })
    .pipe(z.record(hostPort(), hostPort()))

export const redisSchema = z
  .object({
    url: z.string().url().default('redis://127.0.0.1:6379').describe('Redis URL (redis:// or rediss:// for TLS); user and password may be given in it. In cluster and sentinel modes only its scheme, user, password and database are used (and its host:port as the cluster seed when redis.nodes is empty). Env: REDIS_URL.'),
    mode: z.enum(['single', 'cluster', 'sentinel']).default('single').describe('single: one Redis (or a proxy in front of one); cluster: Redis Cluster (seeds in redis.nodes); sentinel: the master that Sentinel names (redis.sentinels, redis.sentinelName).'),
    nodes: list(hostPort()).default([]).describe('Cluster seed nodes, host:port (comma-separated in env and flags); any reachable master or replica will do, the rest is discovered.'),
    natMap: natMap().optional().describe('Cluster or Sentinel: the address a node announces mapped to the one this host reaches it at (a:6379=b:7001, comma-separated in env; a mapping in a file). For NAT and containers.'),
    sentinels: list(hostPort()).default([]).describe('Sentinel addresses, host:port (comma-separated in env and flags); mode sentinel.'),
    sentinelName: z.string().min(1).optional().describe('Name of the master the sentinels monitor (`sentinel monitor <name> ...`); required in mode sentinel.'),
    sentinelUsername: z.string().optional().describe('ACL user on the sentinels (their own, not the master\'s).'),
    sentinelPassword: z.string().optional().describe('Password of the sentinels (requirepass / ACL). Never logged.'),
    sentinelTls: bool().optional().describe('TLS to the sentinels; default: as for the data nodes.'),
    username: z.string().optional().describe('Redis ACL user (overrides the URL); in cluster and sentinel modes, the user on every data node.'),
    password: z.string().optional().describe('Redis password (overrides the URL). Never logged.'),
    tls: bool().optional().describe('TLS to the data nodes; default: on with rediss://, off with redis://. The certificate is checked against the URL host (single), the first seed\'s name (cluster; an address seed: each node\'s address) or the master\'s address the sentinels give (sentinel). No client certificate is sent: set tls-auth-clients no (or optional) on the servers.'),
    tlsCaFile: z.string().optional().describe('PEM file of the CA that signed the Redis (and Sentinel) certificates, when it is not a system CA.'),
    tlsRejectUnauthorized: bool().default(true).describe('Check the Redis server certificate with TLS.'),
    prefix: z.string().default('bull').describe('Key prefix of the BullMQ queues. In cluster mode it must not hold a hash tag ({...}): every queue would land in one slot.'),
  })
  .superRefine((r, ctx) => {
    if (r.mode === 'sentinel') {
      if (r.sentinels.length === 0) ctx.addIssue({ code: 'custom', path: ['sentinels'], message: 'mode sentinel needs at least one sentinel (host:port)' })
      if (r.sentinelName === undefined) ctx.addIssue({ code: 'custom', path: ['sentinelName'], message: 'mode sentinel needs the master name the sentinels monitor' })
    }
    if (r.mode === 'cluster' && /[{}]/.test(r.prefix)) ctx.addIssue({ code: 'custom', path: ['prefix'], message: 'in cluster mode the prefix must not contain { or }: the queue names carry the hash tags' })
    // settings another mode would silently ignore: refused, so an operator never believes them applied
    const other = (path: string, set: boolean, modes: readonly string[]) => {
      if (set && !modes.includes(r.mode)) ctx.addIssue({ code: 'custom', path: [path], message: `only used in mode ${modes.join(' or ')} (redis.mode is ${r.mode})` })
    }
    other('nodes', r.nodes.length > 0, ['cluster'])
    other('natMap', r.natMap !== undefined, ['cluster', 'sentinel'])
    other('sentinels', r.sentinels.length > 0, ['sentinel'])
    for (const key of ['sentinelName', 'sentinelUsername', 'sentinelPassword', 'sentinelTls'] as const) other(key, r[key] !== undefined, ['sentinel'])
    if (r.sentinelUsername !== undefined && r.sentinelPassword === undefined) {
      ctx.addIssue({ code: 'custom', path: ['sentinelPassword'], message: 'redis.sentinelUsername needs redis.sentinelPassword (the sentinels are only logged in to with a password)' })
    }
    const tls = r.tls ?? r.url.startsWith('rediss:')
    if (r.tlsCaFile !== undefined && !tls && r.sentinelTls !== true) {
      ctx.addIssue({ code: 'custom', path: ['tlsCaFile'], message: 'TLS is off (redis:// URL, redis.tls unset): the CA file would be ignored; use rediss:// or redis.tls: true' })
    }
  })
  .prefault({})

export const workersSchema = z
  .object({
    threads: intFromEnv(1, 64).default(2).describe('Disk streams this proxy runs at once, on at most one Piscina thread per CPU core (more streams than cores share threads evenly).'),
    concurrency: intFromEnv(1, 256).default(2).describe('Jobs this proxy runs at once, per queue served.'),
    lockDurationMs: duration().default(60_000).describe('BullMQ job lock duration; renewed independently of stream progress.'),
    stalledIntervalMs: duration().default(30_000).describe('How often stalled jobs (whose proxy died) are looked for.'),
    maxStalledCount: intFromEnv(0, 100).default(2).describe('How many times a stalled job is picked up again before it fails.'),
    shutdownGraceMs: duration().default(60_000).describe('On SIGTERM, how long running disks may finish before they are cancelled.'),
    attempts: intFromEnv(1, 100).default(3).describe('Attempts of a job for transient failures (not for invalid tasks or auth errors).'),
    backoffMs: duration().default(10_000).describe('First retry delay; doubles each attempt.'),
  })
  .prefault({})

export const httpSchema = z
  .object({
    listen: z.string().regex(/^(\[[0-9a-fA-F:]+\]|[^:]+):\d{1,5}$/, 'host:port').default('127.0.0.1:9464').describe('Address of /metrics, /healthz and /readyz; nothing is exposed to the network unless set.'),
    metricsToken: z.string().optional().describe('Bearer token required on /metrics when set. Never logged.'),
  })
  .prefault({})

export const logSchema = z
  .object({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('Log level.'),
    pretty: bool().optional().describe('Pretty logs; default when stderr is a terminal.'),
  })
  .prefault({})

export const securitySchema = z
  .object({
    sealKey: z.string().optional().describe('Key (32 bytes, base64 or hex) that seals XAPI credentials in queued jobs; orchestrator and proxies share it. Never logged.'),
    sealKeyFile: z.string().optional().describe('File holding the seal key (preferred to sealKey).'),
  })
  .prefault({})

/**
 * The xo-proxy JSON-RPC API (what Xen Orchestra's xo-server calls on its proxies). Disabled unless a
 * token hash is configured (`backup-proxy api token` makes one): nothing is served without it.
 */
export const apiSchema = z
  .object({
    tokenHash: z.string().regex(/^scrypt\$/, 'a hash printed by `backup-proxy api token` (scrypt$...)').optional().describe('Hash of the API token (from `backup-proxy api token`); the API is served only when this or tokenHashFile is set. The token itself is never stored.'),
    tokenHashFile: z.string().optional().describe('File holding the token hash (written by `backup-proxy api token --hash-file`).'),
    listen: z.string().regex(/^(\[[0-9a-fA-F:]+\]|[^:]+):\d{1,5}$/, 'host:port').default('0.0.0.0:443').describe('HTTPS address of the API (XO calls https://<address>/api/v1).'),
    certFile: z.string().optional().describe('PEM certificate of the API; without it (and keyFile) a self-signed one is generated once in stateDir.'),
    keyFile: z.string().optional().describe('PEM private key matching certFile.'),
    stateDir: z.string().default('/var/lib/backup-proxy').describe('Directory of the API state (the generated self-signed certificate and key).'),
    pool: z.string().regex(ID_RE, 'letters, digits, ".", "_" and "-", 1-63 characters').optional().describe('Pool queue that backup.run enqueues into (default: this proxy\'s own queue).'),
    maxBodyBytes: size().default(4 * 1024 * 1024).describe('Largest request body accepted; larger ones get a JSON-RPC error.'),
    keepAliveMs: duration().default(10_000).describe('While a streamed answer is idle, a space is sent this often so proxies between XO and us keep the connection (0 = never).'),
  })
  .prefault({})

/** Backup settings, XO's names and defaults; per-job settings override them. */
export const backupSchema = z
  .object({
    concurrency: intFromEnv(1, 64).default(2).describe('VMs backed up in parallel within one run.'),
    diskPerVmConcurrency: intFromEnv(0, 64).default(0).describe('Disks of one VM exported in parallel (0 = all).'),
    exportRetention: intFromEnv(1, 10_000).default(7).describe('Backups kept per VM on each remote; older ones are merged away.'),
    snapshotRetention: intFromEnv(0, 1000).default(1).describe('Backup snapshots kept on the pool per VM (the newest is the next delta base).'),
    fullInterval: intFromEnv(0, 10_000).default(0).describe('Force a full backup every N runs (0 = never).'),
    maxExportRate: size().default(0).describe('Export rate limit per disk in bytes/s (0 = unlimited); accepts sizes (100MiB).'),
    exportInactivityTimeoutMs: duration()
      .refine((v) => v >= 1000 && v <= 86_400_000, 'must be between 1s and 24h')
      .default(300_000)
      .describe("A disk export of a backup (XAPI's HTTP export, or NBD) that sends no byte for this long fails the VM (E_XAPI, stalled); its snapshot is removed. 5 minutes, as XO's."),
    timeoutMs: duration().default(0).describe('Timeout of a whole run (0 = none).'),
    nRetriesVmBackupFailures: intFromEnv(0, 100).default(0).describe('Retries of a failed VM within a run.'),
    compression: xvaCompression().default('').describe("XO's job compression: the XVA compression of full-mode backups ('native', 'zstd', '' = none). This proxy writes VHD backups, where XO ignores it too."),
    xvaChecksum: z
      .enum(['auto', 'md5', 'sha256'], { message: 'must be "auto", "md5" (what XO writes) or "sha256"' })
      .default('auto')
      .describe("Digest of the checksum file of a full backup's XVA, in XO's format (XO reads all: $1$ MD5, $5$ SHA-256). auto: SHA-256 where the CPU has SHA-256 instructions (x86 sha_ni, arm64 sha2; over twice as fast as MD5 there), else MD5 as XO writes."),
    vhdDirectoryCompression: z
      .enum(['brotli', 'none'], { message: 'must be "brotli" (XO\'s default) or "none"' })
      .default('brotli')
      .describe("Block compression of VhdDirectory backups (XO's vhdDirectoryCompression): brotli, as XO's proxies, or none."),
    checkpointSnapshot: bool().default(false).describe('Use VM.checkpoint (with memory) instead of VM.snapshot.'),
    preferNbd: bool().default(false).describe("Read disks over NBD when the pool has a network with the nbd or insecure_nbd purpose (XO's preferNbd); deltas then come from CBT when it is enabled. Falls back to the HTTP export with a warning."),
    nbdConcurrency: intFromEnv(1, 64).default(1).describe("NBD connections per disk (XO's nbdConcurrency)."),
    cbtDestroySnapshotData: bool().default(false).describe("With preferNbd: enable CBT on the disks and destroy the snapshot's data after an export that succeeded on every target, keeping only its CBT metadata (XO's cbtDestroySnapshotData; needs snapshotRetention 0 or 1)."),
  })
  .prefault({})

export const configSchema = z
  .object({
    proxy: proxySchema,
    redis: redisSchema,
    workers: workersSchema,
    http: httpSchema,
    log: logSchema,
    security: securitySchema,
    backup: backupSchema,
    api: apiSchema,
  })
  .strict()

/** What a config file or env may contain (before defaults and unit parsing). */
export type RawConfig = z.input<typeof configSchema>
/** The compiled configuration every component receives. */
export type Config = z.output<typeof configSchema>
export type BackupSettings = Config['backup']

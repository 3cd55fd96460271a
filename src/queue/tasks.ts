/**
 * Task payloads: one zod schema per task kind, with inferred types, and `parseTask()` that turns any
 * problem into a `TaskInvalidError` (E_TASK_INVALID) naming the field (`xapis.main.url: ...`).
 *
 * `backup.run` mirrors Xen Orchestra's backup.run call so an XOA can drive a proxy:
 * `job` (id, name, mode, vms, settings keyed by '' / scheduleId / vmUuid / remoteId), `schedule`,
 * `remotes`, `xapis`, `recordToXapi`. The other kinds (`remote.test`, `remote.list`, `backup.verify`,
 * `backup.restore`) reuse the same remote and XAPI descriptors.
 *
 * These schemas describe tasks IN CLEAR (what the orchestrator hands the client and what a processor
 * receives). At rest in Redis the secret fields listed in `SECRET_PATHS` are sealed (seal.ts).
 * Ids that end up in paths on a remote or in Redis keys are checked against ID_RE, so `..`, `/` and
 * control characters never get through; VM and SR ids must be UUIDs.
 */
import { z } from 'zod'
import { TaskInvalidError, type JsonValue } from '../common/errors.js'
import { parseRemoteUrl } from '../remotes/url.js'
import { ID_RE, ID_RULE } from './names.js'
import { checkKeyForm } from '../remotes/encryption-format.js'
import { xvaCompression } from '../config/schema.js'
import { withoutForbiddenKeys, xoOnlyJobFields, xoOnlySettings, xoScheduleFields } from './xo-fields.js'

/** Serialized task larger than this is refused: a task describes work, it never carries data. */
export const MAX_TASK_BYTES = 256 * 1024

export const TASK_KINDS = ['backup.run', 'remote.test', 'remote.list', 'backup.verify', 'backup.restore', 'backup.mirror', 'backup.metadata'] as const
export type TaskKind = (typeof TASK_KINDS)[number]

const id = () => z.string().regex(ID_RE, ID_RULE)
const uuid = () => z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, 'a UUID')

const jsonValue: z.ZodType<JsonValue> = z.lazy(() => z.union([z.string(), z.number(), z.boolean(), z.null(), z.array(jsonValue), z.record(z.string(), jsonValue)]))

/** A relative path inside a remote: `/`-separated, no empty, `.` or `..` segment, no backslash or NUL. */
export const relativePath = (): z.ZodString =>
  z
    .string()
    .min(1)
    .max(1024)
    .refine((p) => !p.startsWith('/') && !/[\\\0]/.test(p) && p.split('/').every((s) => s !== '' && s !== '.' && s !== '..'), 'a relative path without "..", "." or empty segments')

const remoteUrl = () =>
  z.string().max(4096).superRefine((url, ctx) => {
    try {
      parseRemoteUrl(url)
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: `not a valid remote URL (file://, nfs://, smb://, s3://, s3+http://): ${(error as Error).message}` })
    }
  })

export const remoteOptionsSchema = z
  .object({
    encryptionKey: z
      .string()
      .min(1)
      .superRefine((key, ctx) => {
        try {
          checkKeyForm(key)
        } catch (error) {
          ctx.addIssue({ code: 'custom', message: (error as Error).message }) // never the key itself
        }
      })
      .optional(),
    useVhdDirectory: z.boolean().optional(),
    uploadPartSizeBytes: z.number().int().positive().optional(),
    uploadConcurrency: z.number().int().min(1).max(64).optional(),
    allowUnauthorized: z.boolean().optional(),
    protocolVersion: z.string().max(16).optional(),
    uid: z.number().int().min(0).optional(),
    gid: z.number().int().min(0).optional(),
    nfsWindow: z.number().int().min(1).max(256).optional(),
  })
  .strict()

export const remoteSchema = z.object({ url: remoteUrl(), options: remoteOptionsSchema.optional() }).strict()
export type TaskRemote = z.infer<typeof remoteSchema>

export const xapiCredentialsSchema = z.object({ username: z.string().min(1).max(256), password: z.string().max(1024) }).strict()
export type XapiCredentials = z.infer<typeof xapiCredentialsSchema>

export const xapiSchema = z
  .object({
    url: z.string().regex(/^https?:\/\/[^\s/]+/i, 'an http(s):// URL of the pool master'),
    credentials: xapiCredentialsSchema,
    allowUnauthorized: z.boolean().default(false),
  })
  .strict()
export type TaskXapi = z.infer<typeof xapiSchema>

/** Per-job settings, XO's names (those we do not use are typed in xo-fields.ts); unknown ones are kept (JSON) and reported by unknownTaskFields. */
export const jobSettingsSchema = z
  .object({
    concurrency: z.number().int().min(1).max(64).optional(),
    diskPerVmConcurrency: z.number().int().min(0).max(64).optional(),
    exportRetention: z.number().int().min(0).max(10_000).optional(),
    snapshotRetention: z.number().int().min(0).max(1000).optional(),
    fullInterval: z.number().int().min(0).max(10_000).optional(),
    maxExportRate: z.number().min(0).optional(),
    timeout: z.number().int().min(0).optional(),
    nRetriesVmBackupFailures: z.number().int().min(0).max(100).optional(),
    compression: xvaCompression().optional(),
    checkpointSnapshot: z.boolean().optional(),
    ...xoOnlySettings,
  })
  .catchall(jsonValue)
export type JobSettings = z.infer<typeof jobSettingsSchema>

const uuidList = () => z.union([uuid(), z.array(uuid()).min(1).max(10_000), z.object({ __or: z.array(uuid()).min(1).max(10_000) }).strict()])

const vmsSchema = z.union([
  z.object({ uuid: uuidList() }).strict(),
  // XO's own simple pattern, what xo-server sends a proxy: `{id: uuid}` or `{id: {__or: [uuids]}}`
  z
    .object({ id: uuidList() })
    .strict()
    .transform((v) => ({ uuid: v.id })),
  // XO "smart mode" pattern ({ $pool, tags, power_state, __not, __or ... }): resolved against XAPI at run time
  withoutForbiddenKeys(
    z
      .object({ type: z.literal('VM').optional() })
      .catchall(jsonValue)
      .refine((p) => !('uuid' in p), 'list VMs as {uuid: [...]} (or XO\'s {id: {__or: [...]}}), each a UUID'),
  ),
], { error: 'expected {uuid: uuid | [uuids] | {__or: [uuids]}}, XO\'s {id: ...} of UUIDs, or a smart-mode pattern ({tags, power_state, $pool, ...})' })

export const backupRunSchema = z
  .object({
    kind: z.literal('backup.run'),
    // XO's job as xo-server stores and sends it: the fields we do not use are typed (xo-fields.ts),
    // unknown ones kept (reported by unknownTaskFields)
    job: withoutForbiddenKeys(
      z
        .object({
          id: id(),
          name: z.string().max(512).default(''),
          mode: z.enum(['delta', 'full']),
          vms: vmsSchema,
          settings: withoutForbiddenKeys(z.record(z.union([z.literal(''), id()]), withoutForbiddenKeys(jobSettingsSchema))).default({ '': {} }),
          ...xoOnlyJobFields,
        })
        .catchall(jsonValue),
    ),
    schedule: withoutForbiddenKeys(z.object({ id: id(), ...xoScheduleFields }).catchall(jsonValue)),
    /** XO's jobData (the job run's log entry: runJobId, userId, ...), kept for the task log */
    jobData: z.record(z.string(), jsonValue).optional(),
    // may be empty when the job replicates to SRs only (job.srs)
    remotes: z.record(id(), remoteSchema),
    xapis: z.record(id(), xapiSchema).refine((x) => Object.keys(x).length > 0, 'at least one XAPI'),
    recordToXapi: z.record(uuid(), id()).default({}),
  })
  .strict()
  .superRefine((task, ctx) => {
    if (Object.keys(task.remotes).length === 0 && task.job.srs === undefined) ctx.addIssue({ code: 'custom', path: ['remotes'], message: 'at least one remote (or SRs in job.srs)' })
    for (const [pool, xapiId] of Object.entries(task.recordToXapi)) {
      if (!(xapiId in task.xapis)) ctx.addIssue({ code: 'custom', path: ['recordToXapi', pool], message: `names XAPI "${xapiId}" which is not in xapis` })
    }
  })

export const remoteTestSchema = z.object({ kind: z.literal('remote.test'), remoteId: id().optional(), remote: remoteSchema }).strict()

export const remoteListSchema = z
  .object({ kind: z.literal('remote.list'), remoteId: id().optional(), remote: remoteSchema, vmUuid: uuid().optional(), path: relativePath().optional() })
  .strict()

export const backupVerifySchema = z
  .object({
    kind: z.literal('backup.verify'),
    remoteId: id().optional(),
    remote: remoteSchema,
    /** metadata file of the backup, e.g. xo-vm-backups/<vm>/<ts>.json */
    metadataPath: relativePath().refine((p) => p.endsWith('.json'), 'a backup metadata .json path'),
  })
  .strict()

export const backupRestoreSchema = z
  .object({
    kind: z.literal('backup.restore'),
    remoteId: id().optional(),
    remote: remoteSchema,
    metadataPath: relativePath().refine((p) => p.endsWith('.json'), 'a backup metadata .json path'),
    xapi: xapiSchema,
    srUuid: uuid(),
    /** XO's mapVdisSrs: backup VDI uuid (or its source disk's) → SR uuid, null = leave the disk out */
    mapVdisSrs: z.record(uuid(), uuid().nullable()).optional(),
    name: z.string().max(512).optional(),
    start: z.boolean().default(false),
  })
  .strict()

/**
 * `backup.mirror`: XO's mirror backup job (`type: 'mirrorBackup'`): the backups of `job.sourceRemote`
 * copied to the other remotes (`job.remotes` when given, else every remote of the task but the source),
 * `job.filter` matched on each backup's metadata, each target's exportRetention applied after.
 */
export const backupMirrorSchema = z
  .object({
    kind: z.literal('backup.mirror'),
    job: withoutForbiddenKeys(
      z
        .object({
          id: id(),
          name: z.string().max(512).default(''),
          mode: z.enum(['delta', 'full']),
          sourceRemote: id(),
          filter: jsonValue.nullable().optional(),
          settings: withoutForbiddenKeys(z.record(z.union([z.literal(''), id()]), withoutForbiddenKeys(jobSettingsSchema))).default({ '': {} }),
          ...xoOnlyJobFields,
        })
        .extend({ type: z.literal('mirrorBackup').optional() })
        .catchall(jsonValue),
    ),
    schedule: withoutForbiddenKeys(z.object({ id: id(), ...xoScheduleFields }).catchall(jsonValue)),
    jobData: z.record(z.string(), jsonValue).optional(),
    remotes: z.record(id(), remoteSchema),
    /** XO sends its XAPIs (used by health checks only): accepted, not used */
    xapis: z.record(id(), xapiSchema).optional(),
    recordToXapi: z.record(z.string(), id()).optional(),
  })
  .strict()
  .superRefine((task, ctx) => {
    if (!(task.job.sourceRemote in task.remotes)) ctx.addIssue({ code: 'custom', path: ['job', 'sourceRemote'], message: `names remote "${task.job.sourceRemote}" which is not in remotes` })
  })

/** XO's metadata backup data of its own configuration: JSON text, or binary as {encoding, data}. */
export const xoMetadataSchema = z.union([z.string(), z.object({ encoding: z.literal('base64'), data: z.string() }).strict()])

/**
 * `backup.metadata`: XO's metadata backup job (`type: 'metadataBackup'`): each pool of `job.pools` (its
 * XAPI database dump) and, when the job carries it, XO's configuration (`job.xoMetadata`), written to
 * every remote in XO's layout, with retentionPoolMetadata / retentionXoMetadata.
 */
export const backupMetadataSchema = z
  .object({
    kind: z.literal('backup.metadata'),
    job: withoutForbiddenKeys(
      z
        .object({
          id: id(),
          name: z.string().max(512).default(''),
          type: z.literal('metadataBackup').optional(),
          pools: jsonValue.optional(),
          xoMetadata: xoMetadataSchema.optional(),
          settings: withoutForbiddenKeys(z.record(z.union([z.literal(''), id()]), z.object({ retentionPoolMetadata: z.number().int().min(0).max(10_000).nullable().optional(), retentionXoMetadata: z.number().int().min(0).max(10_000).nullable().optional() }).catchall(jsonValue))).default({ '': {} }),
          proxy: z.string().max(128).optional(),
          remotes: jsonValue.optional(),
          userId: z.string().max(128).optional(),
        })
        .catchall(jsonValue),
    ),
    schedule: withoutForbiddenKeys(z.object({ id: id(), ...xoScheduleFields }).catchall(jsonValue)),
    jobData: z.record(z.string(), jsonValue).optional(),
    remotes: z.record(id(), remoteSchema).refine((r) => Object.keys(r).length > 0, 'at least one remote'),
    xapis: z.record(id(), xapiSchema).default({}),
    /** pool uuid → the XAPI (key of xapis) of that pool */
    recordToXapi: z.record(uuid(), id()).default({}),
  })
  .strict()
  .superRefine((task, ctx) => {
    for (const [pool, xapiId] of Object.entries(task.recordToXapi)) {
      if (!(xapiId in task.xapis)) ctx.addIssue({ code: 'custom', path: ['recordToXapi', pool], message: `names XAPI "${xapiId}" which is not in xapis` })
    }
  })

export const taskSchema = z.discriminatedUnion('kind', [backupRunSchema, remoteTestSchema, remoteListSchema, backupVerifySchema, backupRestoreSchema, backupMirrorSchema, backupMetadataSchema])

export type BackupRunTask = z.output<typeof backupRunSchema>
export type RemoteTestTask = z.output<typeof remoteTestSchema>
export type RemoteListTask = z.output<typeof remoteListSchema>
export type BackupVerifyTask = z.output<typeof backupVerifySchema>
export type BackupRestoreTask = z.output<typeof backupRestoreSchema>
export type BackupMirrorTask = z.output<typeof backupMirrorSchema>
export type BackupMetadataTask = z.output<typeof backupMetadataSchema>
export type Task = z.output<typeof taskSchema>
/** What a caller may pass (defaults not yet applied). */
export type TaskInput = z.input<typeof taskSchema>
export type TaskOf<K extends TaskKind> = Extract<Task, { kind: K }>
export type TaskInputOf<K extends TaskKind> = Extract<TaskInput, { kind: K }>

/** Fields sealed at rest, per kind (`*` = every key of a record). Paths are matched on the clear task. */
export const SECRET_PATHS: Record<TaskKind, readonly string[]> = {
  'backup.run': ['xapis.*.credentials', 'remotes.*.url', 'remotes.*.options.encryptionKey'],
  'remote.test': ['remote.url', 'remote.options.encryptionKey'],
  'remote.list': ['remote.url', 'remote.options.encryptionKey'],
  'backup.verify': ['remote.url', 'remote.options.encryptionKey'],
  'backup.restore': ['remote.url', 'remote.options.encryptionKey', 'xapi.credentials'],
  'backup.mirror': ['xapis.*.credentials', 'remotes.*.url', 'remotes.*.options.encryptionKey'],
  'backup.metadata': ['xapis.*.credentials', 'remotes.*.url', 'remotes.*.options.encryptionKey', 'job.xoMetadata'],
}

const KNOWN_JOB_FIELDS = new Set(['id', 'name', 'mode', 'vms', 'settings', ...Object.keys(xoOnlyJobFields)])
const KNOWN_SCHEDULE_FIELDS = new Set(['id', ...Object.keys(xoScheduleFields)])
const KNOWN_SETTINGS = new Set(Object.keys(jobSettingsSchema.shape))

/**
 * Fields of a backup.run job, schedule or settings that neither we nor the XO versions we know use:
 * kept in the task, reported (`job.foo`, `job.settings[''].bar`) so the run can log them as warnings.
 */
export function unknownTaskFields(task: BackupRunTask): string[] {
  const out: string[] = []
  for (const k of Object.keys(task.job)) if (!KNOWN_JOB_FIELDS.has(k)) out.push(`job.${k}`)
  for (const k of Object.keys(task.schedule)) if (!KNOWN_SCHEDULE_FIELDS.has(k)) out.push(`schedule.${k}`)
  for (const [key, settings] of Object.entries(task.job.settings)) {
    for (const k of Object.keys(settings)) if (!KNOWN_SETTINGS.has(k)) out.push(`job.settings[${JSON.stringify(key)}].${k}`)
  }
  return out
}

export function isTaskKind(kind: unknown): kind is TaskKind {
  return typeof kind === 'string' && (TASK_KINDS as readonly string[]).includes(kind)
}

function formatPath(path: readonly PropertyKey[]): string {
  return path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[') || '(task)'
}

/**
 * Recently validated tasks, by their JSON text: the JSON of the parsed task (defaults applied). The same
 * task text comes back job after job (an orchestrator's schedules, a proxy opening them), and JSON.parse
 * of a known result costs a fraction of the schema's work. Only tasks that passed are remembered, only
 * small ones, for a while, and only for plain JSON input (`isPlainJson`: a Date, a function, NaN or a
 * class instance is not what its JSON text says): a hit is exactly what the schema returned for it.
 */
const VALID_MEMO_SIZE = 128
const VALID_MEMO_MAX_CHARS = 16 * 1024
const VALID_MEMO_TTL_MS = 10 * 60_000
const validated = new Map<string, { output: string; at: number }>()

/** True when `v` is something JSON.parse could have returned, so its JSON text stands for it exactly. */
function isPlainJson(v: unknown, depth = 0): boolean {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return true
  if (typeof v === 'number') return Number.isFinite(v)
  if (typeof v !== 'object' || depth > 64) return false
  if (Array.isArray(v)) {
    for (const item of v as unknown[]) if (!isPlainJson(item, depth + 1)) return false
    return true
  }
  const proto: unknown = Object.getPrototypeOf(v)
  if (proto !== Object.prototype && proto !== null) return false
  for (const key of Object.keys(v)) if (!isPlainJson((v as Record<string, unknown>)[key], depth + 1)) return false
  return true
}

function rememberValid(text: string, input: unknown, task: Task, now: number): void {
  if (text.length > VALID_MEMO_MAX_CHARS || !isPlainJson(input)) return
  if (validated.size >= VALID_MEMO_SIZE) {
    const oldest = validated.keys().next()
    if (oldest.done !== true) validated.delete(oldest.value)
  }
  validated.set(text, { output: JSON.stringify(task), at: now })
}

/** Keys that name JavaScript's object machinery: zod's records skip them, so they are refused up front. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype'])

/** The path of the first forbidden own key in `v` (`remotes.__proto__`), or undefined. */
function forbiddenKeyPath(v: unknown, path: string, depth = 0): string | undefined {
  if (typeof v !== 'object' || v === null || depth > 64) return undefined
  for (const key of Object.keys(v)) {
    const here = Array.isArray(v) ? `${path}[${key}]` : key === '' ? `${path}['']` : path === '' ? key : `${path}.${key}`
    if (!Array.isArray(v) && FORBIDDEN_KEYS.has(key)) return here
    const found = forbiddenKeyPath((v as Record<string, unknown>)[key], here, depth + 1)
    if (found !== undefined) return found
  }
  return undefined
}

/**
 * Validates a task in clear and applies defaults. Throws TaskInvalidError whose message names every bad
 * field (`fields.issues` lists them, `fields.field` is the first), never echoing secret values.
 */
export function parseTask(input: unknown): Task {
  let text: string
  try {
    text = JSON.stringify(input) ?? ''
  } catch (error) {
    throw new TaskInvalidError('task is not JSON-serializable (cycle or BigInt?)', { cause: error, fields: { field: '(task)' } })
  }
  const now = Date.now()
  const known = validated.get(text)
  if (known !== undefined) {
    if (now - known.at <= VALID_MEMO_TTL_MS) {
      if (isPlainJson(input)) return JSON.parse(known.output) as Task
    } else {
      validated.delete(text)
    }
  }
  const size = Buffer.byteLength(text)
  if (size > MAX_TASK_BYTES) {
    throw new TaskInvalidError(`task is ${size} bytes, more than the ${MAX_TASK_BYTES} allowed: a task describes work, it must not carry data`, {
      fields: { field: '(task)', sizeBytes: size },
    })
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new TaskInvalidError('task must be an object with a "kind"', { fields: { field: '(task)' } })
  }
  const forbidden = forbiddenKeyPath(input, '')
  if (forbidden !== undefined) {
    throw new TaskInvalidError(`${forbidden}: the keys __proto__, constructor and prototype are not allowed anywhere in a task (rename the entry)`, { fields: { field: forbidden } })
  }
  const kind = (input as { kind?: unknown }).kind
  if (!isTaskKind(kind)) {
    throw new TaskInvalidError(`kind: unknown task kind ${JSON.stringify(kind) ?? 'undefined'}; expected one of ${TASK_KINDS.join(', ')}`, { fields: { field: 'kind' } })
  }
  const result = taskSchema.safeParse(input)
  if (result.success) {
    rememberValid(text, input, result.data, now)
    return result.data
  }
  const issues = result.error.issues.map((issue) => {
    const keys = issue.code === 'unrecognized_keys' ? issue.keys : []
    const base = formatPath(issue.path)
    const path = keys.length > 0 ? keys.map((k) => (base === '(task)' ? k : `${base}.${k}`)).join(', ') : base
    const message = issue.code === 'unrecognized_keys' ? 'unknown field' : issue.message
    return { path, message }
  })
  throw new TaskInvalidError(`invalid ${kind} task: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, {
    fields: { field: issues[0]?.path ?? '(task)', issues },
  })
}

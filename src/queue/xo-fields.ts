/**
 * The fields Xen Orchestra puts in a backup job, its schedule and its settings (xo-server's backup-ng
 * API `createJob` params and SCHEMA_SETTINGS, the runners' DEFAULT_SETTINGS / DEFAULT_XAPI_VM_SETTINGS,
 * the job runner's `userId` and `runId`), typed so that an invalid value of a known field is refused
 * (E_TASK_INVALID naming it), while fields XO adds between versions are kept and reported by
 * `unknownTaskFields` (the run logs them as warnings) instead of refused.
 *
 * Keys that would reach an object's prototype (`__proto__`, `constructor`, `prototype`) are refused
 * wherever these objects accept free keys.
 */
import { z } from 'zod'
import type { JsonValue } from '../common/errors.js'

const FORBIDDEN_KEYS = ['__proto__', 'constructor', 'prototype'] as const

const jsonValue: z.ZodType<JsonValue> = z.lazy(() => z.union([z.string(), z.number(), z.boolean(), z.null(), z.array(jsonValue), z.record(z.string(), jsonValue)]))

/** XO's SimpleIdPattern: `{id: 'x'}` or `{id: {__or: ['x', 'y']}}`. */
const simpleIdPatternSchema = z.object({ id: z.union([z.string().max(128), z.object({ __or: z.array(z.string().max(128)).max(10_000) }).strict()]) }).strict()

/** Settings XO sends that we do not use, with their types (values still checked). */
export const xoOnlySettings = {
  bypassVdiChainsCheck: z.boolean().optional(),
  cbtDestroySnapshotData: z.boolean().optional(),
  copyRetention: z.number().int().min(0).max(10_000).optional(),
  deleteFirst: z.boolean().optional(),
  healthCheckSr: z.string().max(128).optional(),
  healthCheckVmsWithTags: z.array(z.string().max(256)).max(1000).optional(),
  healthCheckTimeout: z.union([z.string().max(32), z.number().min(0)]).optional(),
  maxMergedDeltasPerRun: z.number().min(0).nullable().optional(),
  offlineBackup: z.boolean().optional(),
  offlineSnapshot: z.boolean().optional(),
  vmTimeout: z.number().min(0).optional(),
  useNbd: z.boolean().optional(),
  preferNbd: z.boolean().optional(),
  nbdConcurrency: z.number().int().min(1).max(64).optional(),
  unconditionalSnapshot: z.boolean().optional(),
  validateVhdStreams: z.boolean().optional(),
  reportWhen: z.enum(['always', 'failure', 'error', 'never']).optional(),
  reportRecipients: z.array(z.string().max(512)).max(1000).optional(),
  backupReportTpl: z.string().max(64).optional(),
  hideSuccessfulItems: z.boolean().optional(),
  longTermRetention: z.record(z.string(), jsonValue).optional(),
  timezone: z.string().max(64).optional(),
  distributeBackups: z.boolean().optional(),
  distributeReplications: z.boolean().optional(),
  mergeBackupsSynchronously: z.boolean().optional(),
  getRemoteTimeout: z.number().min(0).optional(),
}

/** Job fields XO sends that we do not use, with their types. */
export const xoOnlyJobFields = {
  type: z.literal('backup', { error: 'a backup.run task is a VM backup job ("backup"): mirror and metadata jobs are backup.mirror and backup.metadata tasks' }).optional(),
  compression: z.enum(['', 'native', 'zstd']).optional(),
  proxy: z.string().max(128).optional(),
  remotes: simpleIdPatternSchema.optional(),
  srs: simpleIdPatternSchema.optional(),
  userId: z.string().max(128).optional(),
  runId: z.string().max(128).optional(),
  key: z.string().max(128).optional(),
}

/** Schedule fields XO sends (xo-server's schedule records). */
export const xoScheduleFields = {
  jobId: z.string().max(128).optional(),
  cron: z.string().max(256).optional(),
  enabled: z.boolean().optional(),
  name: z.string().max(512).optional(),
  timezone: z.string().max(64).nullable().optional(),
}

/** Refuses prototype keys in an object with free keys (runs on the raw input, before zod copies it). */
function refuseForbiddenKeys(value: unknown, ctx: z.RefinementCtx): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return
  for (const key of FORBIDDEN_KEYS) {
    if (Object.hasOwn(value, key)) ctx.addIssue({ code: 'custom', path: [key], message: `"${key}" is not allowed as a key` })
  }
}

/**
 * Wraps an object schema so its raw input is checked for prototype keys first (zod drops an own
 * `__proto__` key silently when it copies an object). Typed as the wrapped schema: same input, same output.
 */
export function withoutForbiddenKeys<S extends z.ZodType>(schema: S): S {
  return z
    .unknown()
    .superRefine((v, ctx) => refuseForbiddenKeys(v, ctx))
    .pipe(schema) as unknown as S
}

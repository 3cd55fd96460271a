/**
 * Loading the configuration: defaults < config file (YAML or JSON) < environment < flags.
 *
 * Env names are derived from the schema: `BACKUP_PROXY_<SECTION>_<KEY>` in upper snake case
 * (`workers.lockDurationMs` → `BACKUP_PROXY_WORKERS_LOCK_DURATION_MS`), plus `REDIS_URL` for `redis.url`.
 * Invalid configuration fails at start with every problem listed, each naming its key, where it came
 * from, and what was expected.
 */
import { readFile } from 'node:fs/promises'
import type { z } from 'zod'
import { ConfigInvalidError } from '../common/errors.js'
import { configSchema, type Config } from './schema.js'

export interface ConfigLeaf {
  /** dotted path, e.g. `workers.threads` */
  path: string
  env: string
  description: string
  /** JSON of the default value, or undefined when there is none */
  defaultValue: unknown
  type: string
}

type AnySchema = z.ZodType

interface Def {
  type: string
  innerType?: AnySchema
  in?: AnySchema
  out?: AnySchema
  shape?: Record<string, AnySchema>
  defaultValue?: unknown
  options?: AnySchema[]
  entries?: Record<string, string>
}

function def(schema: AnySchema): Def {
  return (schema as unknown as { _zod: { def: Def } })._zod.def
}

function unwrap(schema: AnySchema): { inner: AnySchema; defaultValue: unknown } {
  let s = schema
  let defaultValue: unknown
  for (;;) {
    const d = def(s)
    if ((d.type === 'default' || d.type === 'prefault') && d.innerType) {
      if (defaultValue === undefined) defaultValue = d.defaultValue
      s = d.innerType
    } else if (d.type === 'optional' && d.innerType) s = d.innerType
    else if (d.type === 'pipe' && d.in) s = d.in
    else return { inner: s, defaultValue }
  }
}

function typeName(schema: AnySchema, path: string): string {
  const d = def(schema)
  if (path.endsWith('Ms')) return 'duration'
  if (path.endsWith('Bytes') || path.endsWith('Rate')) return 'size'
  if (d.type === 'enum' && d.entries) return Object.values(d.entries).map((v) => JSON.stringify(v)).join(' | ')
  if (d.type === 'union' && d.options) {
    const kinds = d.options.map((o) => def(o).type)
    if (kinds.includes('boolean')) return 'boolean'
    if (kinds.includes('array')) return 'string[]'
    return kinds.join(' | ')
  }
  return d.type
}

const upperSnake = (s: string): string => s.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()

/** Every leaf setting of the schema, for env mapping and the generated reference. */
export function configLeaves(): ConfigLeaf[] {
  const leaves: ConfigLeaf[] = []
  const sections = def(configSchema).shape ?? {}
  for (const [section, sectionSchema] of Object.entries(sections)) {
    const shape = def(unwrap(sectionSchema).inner).shape ?? {}
    for (const [key, leafSchema] of Object.entries(shape)) {
      const { inner, defaultValue } = unwrap(leafSchema)
      const path = `${section}.${key}`
      leaves.push({
        path,
        env: `BACKUP_PROXY_${upperSnake(section)}_${upperSnake(key)}`,
        description: leafSchema.description ?? inner.description ?? '',
        defaultValue,
        type: typeName(inner, path),
      })
    }
  }
  return leaves
}

export type ConfigSource = 'file' | 'env' | 'flag'

export interface LoadConfigOptions {
  /** Path of a YAML or JSON config file. */
  file?: string
  /** Environment (default process.env). */
  env?: NodeJS.ProcessEnv
  /** Overrides from command-line flags, as a nested partial object. */
  flags?: Record<string, Record<string, unknown>>
}

type Raw = Record<string, Record<string, unknown>>

function setPath(target: Raw, path: string, value: unknown): void {
  const [section, key] = path.split('.') as [string, string]
  target[section] ??= {}
  target[section][key] = value
}

function mergeInto(target: Raw, source: Raw): void {
  for (const [section, values] of Object.entries(source)) {
    if (typeof values !== 'object' || values === null || Array.isArray(values)) {
      ;(target as Record<string, unknown>)[section] = values
      continue
    }
    target[section] = { ...target[section], ...values }
  }
}

export async function readConfigFile(file: string): Promise<Raw> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    throw new ConfigInvalidError([{ path: '--config', message: `cannot read ${file}: ${(error as Error).message}` }], { cause: error })
  }
  let data: unknown
  try {
    // the YAML parser loads only for a YAML file: commands without one start faster
    data = file.endsWith('.json') ? JSON.parse(text) : (await import('yaml')).parse(text)
  } catch (error) {
    throw new ConfigInvalidError([{ path: '--config', message: `${file} is not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(error as Error).message}` }], { cause: error })
  }
  if (data === null || data === undefined) return {}
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigInvalidError([{ path: '--config', message: `${file} must hold a mapping of sections (proxy, redis, workers, ...)` }])
  }
  return data as Raw
}

export function configFromEnv(env: NodeJS.ProcessEnv): Raw {
  const raw: Raw = {}
  if (env.REDIS_URL !== undefined && env.REDIS_URL !== '') setPath(raw, 'redis.url', env.REDIS_URL)
  for (const leaf of configLeaves()) {
    const v = env[leaf.env]
    if (v !== undefined && v !== '') setPath(raw, leaf.path, v)
  }
  return raw
}

/** Validates a raw (merged) configuration; throws ConfigInvalidError listing every issue. */
export function compileConfig(raw: unknown, origins: Map<string, ConfigSource> = new Map()): Config {
  const result = configSchema.safeParse(raw)
  if (result.success) return result.data
  const envByPath = new Map(configLeaves().map((l) => [l.path, l.env]))
  throw new ConfigInvalidError(
    result.error.issues.map((issue) => {
      const keys = issue.code === 'unrecognized_keys' ? issue.keys : []
      const base = issue.path.map(String).join('.')
      const path = keys.length > 0 ? keys.map((k) => (base === '' ? k : `${base}.${k}`)).join(', ') : base
      const origin = origins.get(path)
      const from = origin === 'env' ? ` (from ${path === 'redis.url' ? 'REDIS_URL or ' : ''}${envByPath.get(path) ?? 'env'})` : origin === 'flag' ? ' (from a flag)' : ''
      return { path: path === '' ? '(root)' : path, message: `${issue.message}${from}` }
    }),
  )
}

/** Loads defaults < file < env < flags and returns the compiled configuration. */
export async function loadConfig(options: LoadConfigOptions = {}): Promise<Config> {
  const merged: Raw = {}
  const origins = new Map<string, ConfigSource>()
  const layer = (raw: Raw, source: ConfigSource) => {
    for (const [section, values] of Object.entries(raw)) {
      if (values !== null && typeof values === 'object') for (const key of Object.keys(values)) origins.set(`${section}.${key}`, source)
    }
    mergeInto(merged, raw)
  }
  if (options.file !== undefined) layer(await readConfigFile(options.file), 'file')
  layer(configFromEnv(options.env ?? process.env), 'env')
  if (options.flags !== undefined) {
    const flags: Raw = {}
    for (const [section, values] of Object.entries(options.flags)) {
      for (const [key, value] of Object.entries(values)) if (value !== undefined) setPath(flags, `${section}.${key}`, value)
    }
    layer(flags, 'flag')
  }
  return compileConfig(merged, origins)
}

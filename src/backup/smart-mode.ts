/**
 * XO's "smart mode": a backup job whose `vms` is a pattern (by tags, power state, pool, with `__not`,
 * `__or`, `__and`) rather than a list, resolved against the XAPI when the run starts, as xo-server does:
 * every VM of the connected pools, shaped like XO's VM objects (`type: 'VM'`, `id`/`uuid`, `name_label`,
 * `name_description`, `power_state`, `tags`, `$pool` = pool uuid, `$container`, `other`,
 * `blockedOperations`), is kept when the pattern matches it (value-matcher semantics below), minus
 * VMs tagged `xo:no-bak` (or `xo:no-bak=<reason>`) and replicas this very job made (start blocked and
 * `other['xo:backup:job']` = the job id). No match → E_BACKUP "no VMs match this pattern" (XO's noMatchingVm).
 *
 * Matching (XO's value-matcher): an object pattern matches an object value when every key matches (a
 * missing key does not), except single-key `{__and: [...]}`, `{__or: [...]}`, `{__not: p}`; an array
 * pattern matches an array value when each element matches some element of the value (`tags: ['a']`
 * = "has tag a"); anything else is compared with `===`.
 */
import { BackupProxyError, type JsonValue } from '../common/errors.js'
import { TAG_JOB } from './backup-keys.js'
import type { Rec } from './ports.js'

export function matchPattern(pattern: unknown, value: unknown): boolean {
  if (Array.isArray(pattern)) return Array.isArray(value) && pattern.every((sub) => (value as unknown[]).some((v) => matchPattern(sub, v)))
  if (pattern !== null && typeof pattern === 'object') {
    const p = pattern as Record<string, unknown>
    const keys = Object.keys(p)
    if (keys.length === 1) {
      const [key] = keys
      if (key === '__and') return Array.isArray(p.__and) && p.__and.every((sub) => matchPattern(sub, value))
      if (key === '__or') return Array.isArray(p.__or) && p.__or.some((sub) => matchPattern(sub, value))
      if (key === '__not') return !matchPattern(p.__not, value)
    }
    if (value === null || typeof value !== 'object') return false
    const v = value as Record<string, unknown>
    return keys.every((key) => Object.hasOwn(v, key) && v[key] !== undefined && matchPattern(p[key], v[key]))
  }
  return pattern === value
}

/** A VM record (plus its pool uuid) shaped like the XO object smart-mode patterns are written against. */
export function xoVmObject(record: Rec, poolUuid: string): Record<string, unknown> {
  const uuid = String(record.uuid)
  const residentOn = record.$resident_on$uuid
  return {
    type: 'VM',
    id: uuid,
    uuid,
    name_label: record.name_label,
    name_description: record.name_description,
    power_state: record.power_state,
    tags: Array.isArray(record.tags) ? record.tags : [],
    $pool: poolUuid,
    $poolId: poolUuid,
    $container: record.power_state === 'Running' && typeof residentOn === 'string' ? residentOn : poolUuid,
    other: record.other_config ?? {},
    blockedOperations: record.blocked_operations ?? {},
  }
}

/** The VM uuids a smart-mode pattern selects among `vms` (XO VM objects), for job `jobId`. */
export function selectVms(pattern: Record<string, JsonValue>, vms: readonly Record<string, unknown>[], jobId: string): string[] {
  const full = { type: 'VM', ...pattern }
  const out: string[] = []
  for (const vm of vms) {
    if (!matchPattern(full, vm)) continue
    const blocked = (vm.blockedOperations ?? {}) as Record<string, unknown>
    const other = (vm.other ?? {}) as Record<string, unknown>
    if ('start' in blocked && other[TAG_JOB] === jobId) continue
    const tags = Array.isArray(vm.tags) ? (vm.tags as unknown[]) : []
    if (tags.some((t) => typeof t === 'string' && t.split('=', 1)[0] === 'xo:no-bak')) continue
    out.push(String(vm.uuid))
  }
  if (out.length === 0) {
    throw new BackupProxyError('E_BACKUP', `no VMs match this pattern (XO's noMatchingVm): ${JSON.stringify(pattern)}; check the job's smart-mode tags, power state and pools`, { fields: { jobId } })
  }
  return [...new Set(out)].sort()
}

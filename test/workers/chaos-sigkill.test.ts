/**
 * The short variant of `npm run chaos -- sigkill-real` (bench/chaos-real.ts): `serve` SIGKILLed at random
 * moments during real backup runs (XAPI simulator, real engine, local remote), restarted each time, then
 * left to finish. Every job ends (success, or E_STALLED past maxStalledCount), `verify --full` finds no
 * problem, no VM has a second backup (no duplicate), no VM keeps more than its delta-base snapshot; after
 * each job's next run too.
 */
import { describe, expect, inject, it } from 'vitest'
import { sigkillReal } from '../../bench/chaos-real.js'
import { useTempDir } from '../helpers/tmp.js'

const tmp = useTempDir('bp-chaos-kill-')

describe('serve SIGKILLed during real backup runs', () => {
  it('every job ends, the remote verifies clean, no duplicate backup, no stray snapshot', async () => {
    const r = await sigkillReal({ redisUrl: inject('redisUrl'), work: tmp(), kills: 3, vms: 3, diskBytes: 8 << 20 })
    expect(Object.keys(r.outcomes).filter((k) => k !== 'success' && k !== 'failure:E_STALLED'), JSON.stringify(r.outcomes)).toEqual([])
    expect(r.kills).toBeGreaterThan(0)
    expect(r.verifyProblems).toEqual([])
    expect(r.duplicates).toBe(0)
    expect(r.backups).toBe(r.outcomes.success ?? 0)
    expect(r.maxSnapshotsSucceeded).toBeLessThanOrEqual(1)
    expect(r.nextRun.outcomes).toEqual({ success: 3 })
    expect(r.nextRun.maxSnapshotsPerVm).toBeLessThanOrEqual(1)
    expect(r.nextRun.verifyProblems).toEqual([])
  }, 300_000)
})

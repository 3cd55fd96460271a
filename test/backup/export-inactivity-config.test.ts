/**
 * `backup.exportInactivityTimeoutMs`: how long a backup's disk export may send nothing before the VM
 * fails (test/backup/xapi-faults-run.test.ts runs a stalled export with it shortened). Default 5 minutes,
 * units accepted, values below 1 s or above 24 h refused with E_CONFIG_INVALID naming the key.
 */
import { describe, expect, it } from 'vitest'
import { compileConfig } from '../../src/config/index.js'

describe('backup.exportInactivityTimeoutMs', () => {
  it('defaults to 5 minutes and accepts units', () => {
    expect(compileConfig({}).backup.exportInactivityTimeoutMs).toBe(300_000)
    expect(compileConfig({ backup: { exportInactivityTimeoutMs: '10s' } }).backup.exportInactivityTimeoutMs).toBe(10_000)
  })

  it.each([['10ms'], [0], ['2d'], ['soon']])('refuses %s with a coded error naming the key', (value) => {
    let error: unknown
    try {
      compileConfig({ backup: { exportInactivityTimeoutMs: value } })
    } catch (e) {
      error = e
    }
    expect(error).toMatchObject({ code: 'E_CONFIG_INVALID', message: expect.stringContaining('backup.exportInactivityTimeoutMs') as unknown })
  })
})

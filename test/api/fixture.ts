/** The XO backup.run fixture (fixtures/xo-backup-run.json) filled for a test run. */
import { readFileSync } from 'node:fs'

const TEXT = readFileSync(new URL('./fixtures/xo-backup-run.json', import.meta.url), 'utf8')

interface FixtureValues {
  job: string
  vm: string
  remoteUrl: string
  xapiUrl: string
  xapiUser: string
  xapiPassword: string
  /** SR of the schedule's health check (XO sends a real one); a made-up uuid when the test runs nothing */
  healthCheckSr?: string
}

export const FIXTURE_REMOTE_ID = 'b8a4f9c2-0f3e-4a43-9d6b-6f7e8a9b0c1d'
export const FIXTURE_SCHEDULE_ID = 'c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f'

export function xoRunParams(v: FixtureValues): Record<string, unknown> {
  const filled = TEXT.replaceAll('"@@JOB@@"', JSON.stringify(v.job))
    .replaceAll('"@@VM@@"', JSON.stringify(v.vm))
    .replaceAll('"@@REMOTE_URL@@"', JSON.stringify(v.remoteUrl))
    .replaceAll('"@@XAPI_URL@@"', JSON.stringify(v.xapiUrl))
    .replaceAll('"@@XAPI_USER@@"', JSON.stringify(v.xapiUser))
    .replaceAll('"@@XAPI_PASSWORD@@"', JSON.stringify(v.xapiPassword))
    .replaceAll('"@@HEALTH_CHECK_SR@@"', JSON.stringify(v.healthCheckSr ?? 'd1e2f3a4-b5c6-4d7e-8f9a-0b1c2d3e4f5a'))
  const { $comment: _c, ...params } = JSON.parse(filled) as Record<string, unknown>
  return params
}

/**
 * The systemd unit for installs without containers (deploy/systemd/backup-proxy.service, docs/install.md):
 * `systemd-analyze verify` accepts it, it runs `serve` with the config file, its secrets come as
 * systemd credentials (never inline), and its stop timeout leaves room for the graceful drain.
 */
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { copyFile, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { makeTempDir } from '../helpers/tmp.js'

const unitPath = new URL('../../deploy/systemd/backup-proxy.service', import.meta.url).pathname

describe('systemd unit', () => {
  it('runs serve with the config file, secrets as credentials, a stop timeout over the drain', async () => {
    const unit = await readFile(unitPath, 'utf8')
    const directives = new Map(unit.split('\n').filter((l) => /^[A-Z][A-Za-z]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
    expect(directives.get('ExecStart')).toMatch(/bin\/backup-proxy\.js --config \/etc\/backup-proxy\/config\.yml serve$/)
    expect(unit).toContain('LoadCredential=seal.key:/etc/backup-proxy/seal.key')
    expect(unit).toContain('Environment=BACKUP_PROXY_SECURITY_SEAL_KEY_FILE=%d/seal.key')
    expect(unit).not.toMatch(/PASSWORD=|SEAL_KEY=|TOKEN=/)
    // workers.shutdownGraceMs defaults to 60 s: systemd must wait longer before it kills
    expect(Number(directives.get('TimeoutStopSec'))).toBeGreaterThan(60)
    expect(directives.get('User')).toBe('backup-proxy')
  })

  it.skipIf(!existsSync('/usr/bin/systemd-analyze'))('systemd-analyze verify accepts it', async () => {
    const tmp = await makeTempDir('bp-systemd-')
    try {
      const copy = join(tmp.path, 'backup-proxy.service')
      await copyFile(unitPath, copy)
      const { stdout, stderr } = await promisify(execFile)('systemd-analyze', ['verify', '--man=no', copy])
      expect(`${stdout}${stderr}`.trim()).toBe('')
    } finally {
      await tmp.remove()
    }
  })
})

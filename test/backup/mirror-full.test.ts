/**
 * Mirror of full (XVA) backups, as XO writes them (`<ts>.xva`, `<ts>.xva.checksum` = `$1$$<md5>` or our `$5$$<sha256>`, metadata
 * with `mode: 'full'` and `xva: './<ts>.xva'`): the files are copied byte for byte with their checksum
 * checked, the metadata re-owned by the mirror job; the target keeps its retention (oldest metadata, XVA
 * and checksum removed); XO's RemoteAdapter lists the result; a source XVA whose checksum does not match
 * is refused and nothing of it is published on the target.
 */
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { formatTimestamp } from '../../src/backup/layout.js'
import { inlineCopier, runMirror } from '../../src/backup/mirror.js'
import { parseTask, type BackupMirrorTask } from '../../src/queue/tasks.js'
import { makeTempDir } from '../helpers/tmp.js'
import { xoAdapter } from '../xo/oracle.js'
import { defaults } from './helpers/fixture.js'

const VM = '7d1b3c4e-5f60-4a1b-8c2d-3e4f5a6b7c8d'
let dir: { path: string; remove: () => Promise<void> }

beforeAll(async () => {
  dir = await makeTempDir('bp-mirror-full-')
})
afterAll(async () => {
  await dir?.remove()
})

/** Writes one full backup as XO's FullRemoteWriter does; returns its timestamp name. */
async function xoFullBackup(root: string, at: number, data: Buffer, checksum = `$1$$${createHash('md5').update(data).digest('hex')}`): Promise<string> {
  const ts = formatTimestamp(at)
  const vmDir = join(root, 'xo-vm-backups', VM)
  await mkdir(vmDir, { recursive: true })
  await writeFile(join(vmDir, `${ts}.xva`), data)
  await writeFile(join(vmDir, `${ts}.xva.checksum`), checksum)
  const metadata = { jobId: 'xo-full-job', mode: 'full', scheduleId: 'xo-sched', timestamp: at, version: '2.0.0', vm: { uuid: VM, name_label: 'vm', name_description: '', tags: [] }, vmSnapshot: { uuid: VM }, xva: `./${ts}.xva`, size: data.length }
  await writeFile(join(vmDir, `${ts}.json`), JSON.stringify(metadata))
  return ts
}

function task(src: string, dst: string, retention: number): BackupMirrorTask {
  return parseTask({ kind: 'backup.mirror', job: { id: 'mfull', mode: 'full', sourceRemote: 's', settings: { '': { exportRetention: retention } } }, schedule: { id: 'fs' }, remotes: { s: { url: `file://${src}` }, d: { url: `file://${dst}` } } }) as BackupMirrorTask
}

describe('mirror backup (full, XVA)', () => {
  it('copies XVA, checksum and metadata; keeps the target\'s retention; XO lists the result', async () => {
    const [src, dst] = [join(dir.path, 's1'), join(dir.path, 'd1')]
    await mkdir(dst, { recursive: true })
    const base = Date.UTC(2026, 10, 1)
    const datas = [0, 1, 2].map(() => randomBytes(3 * 1024 * 1024 + 17))
    const names = []
    for (const [i, d] of datas.entries()) names.push(await xoFullBackup(src, base + i * 3_600_000, d))
    const s = await runMirror(task(src, dst, 2), { defaults, copier: inlineCopier, signal: new AbortController().signal })
    expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
    const vmDir = join(dst, 'xo-vm-backups', VM)
    const files = (await readdir(vmDir)).filter((f) => f !== 'cache.json.gz').sort()
    expect(files).toEqual(names.slice(1).flatMap((n) => [`${n}.json`, `${n}.xva`, `${n}.xva.checksum`]))
    for (const [i, n] of names.entries()) {
      if (i === 0) continue
      expect((await readFile(join(vmDir, `${n}.xva`))).equals(datas[i]!)).toBe(true)
      expect(JSON.parse(await readFile(join(vmDir, `${n}.json`), 'utf8'))).toMatchObject({ jobId: 'mfull', scheduleId: 'fs', mode: 'full', xva: `./${n}.xva`, timestamp: base + i * 3_600_000 })
    }
    const { adapter, close } = await xoAdapter({ url: `file://${dst}` })
    try {
      const listed = await adapter.listVmBackups(VM)
      expect(listed.map((b) => [b.mode, b.jobId, b.timestamp])).toEqual([1, 2].map((i) => ['full', 'mfull', base + i * 3_600_000]))
    } finally {
      await close()
    }
  })

  it('refuses a source XVA whose checksum does not match; nothing of it is published', async () => {
    const [src, dst] = [join(dir.path, 's2'), join(dir.path, 'd2')]
    await mkdir(dst, { recursive: true })
    await xoFullBackup(src, Date.UTC(2026, 10, 2), randomBytes(1024 * 1024), '$1$$00000000000000000000000000000000')
    const s = await runMirror(task(src, dst, 2), { defaults, copier: inlineCopier, signal: new AbortController().signal })
    expect(s.status).toBe('failure')
    expect(JSON.stringify(s)).toContain('differs from the recorded')
    const left = await readdir(join(dst, 'xo-vm-backups', VM)).catch(() => [] as string[])
    expect(left.filter((f) => !f.startsWith('.'))).toEqual([])
  })

  it('verifies a SHA-256 checksum file ($5$$, as backup.xvaChecksum writes) and copies it; refuses a wrong one', async () => {
    const [src, dst] = [join(dir.path, 's3'), join(dir.path, 'd3')]
    await mkdir(dst, { recursive: true })
    const data = randomBytes(1024 * 1024 + 5)
    const sha256 = `$5$$${createHash('sha256').update(data).digest('hex')}`
    const ts = await xoFullBackup(src, Date.UTC(2026, 10, 3), data, sha256)
    const ok = await runMirror(task(src, dst, 2), { defaults, copier: inlineCopier, signal: new AbortController().signal })
    expect(ok.status, JSON.stringify(ok, null, 1)).toBe('success')
    expect(await readFile(join(dst, 'xo-vm-backups', VM, `${ts}.xva.checksum`), 'utf8')).toBe(sha256)
    const [src2, dst2] = [join(dir.path, 's4'), join(dir.path, 'd4')]
    await mkdir(dst2, { recursive: true })
    await xoFullBackup(src2, Date.UTC(2026, 10, 4), data, `$5$$${'0'.repeat(64)}`)
    const bad = await runMirror(task(src2, dst2, 2), { defaults, copier: inlineCopier, signal: new AbortController().signal })
    expect(bad.status).toBe('failure')
    expect(JSON.stringify(bad)).toContain('differs from the recorded')
  })
})

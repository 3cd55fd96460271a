/**
 * The checksum file of a full backup's XVA (`<ts>.xva.checksum`, XO's `$<id>$$<hex>`), in each digest
 * `backup.xvaChecksum` can name:
 * - which digest `auto` means, from /proc/cpuinfo's flags (x86 `sha_ni`) or features (arm64 `sha2`);
 * - XO's format: `$1$$` MD5, `$5$$` SHA-256, `$6$$` SHA-512 are read, anything else is not a checksum;
 * - a full backup with `md5` and with `sha256` writes the file in that digest, and XO's own file layer
 *   (@xen-orchestra/fs createReadStream with `checksum: true`) reads the XVA through it — and fails on a
 *   wrong digest of the same algorithm, so the check is real; our restore refuses the wrong SHA-256 too.
 */
import { createHash } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listBackups } from '../../src/backup/catalog.js'
import { inlineImporter } from '../../src/backup/disk-import.js'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { importVmBackup } from '../../src/backup/import-vm-backup.js'
import { runBackup } from '../../src/backup/run.js'
import { parseTask, type BackupRunTask } from '../../src/queue/tasks.js'
import { createRemote } from '../../src/remotes/index.js'
import { XapiClient } from '../../src/xapi/client.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { cpuHasSha256, formatChecksum, parseChecksum } from '../../src/xva/checksum.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, MiB, startSim } from '../backup/helpers/fixture.js'
import { xoHandler } from '../xo/oracle.js'

describe('which digest auto means', () => {
  it('SHA-256 only where the CPU names SHA-256 instructions', () => {
    const x86 = (flags: string) => `processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu vme ${flags} avx2\nbugs\t\t: sysret_ss_attrs\n`
    expect(cpuHasSha256(x86('sha_ni'), 'x64')).toBe(true)
    expect(cpuHasSha256(x86('ssse3'), 'x64')).toBe(false)
    expect(cpuHasSha256('processor\t: 0\nFeatures\t: fp asimd aes pmull sha1 sha2 crc32\n', 'arm64')).toBe(true)
    expect(cpuHasSha256('processor\t: 0\nFeatures\t: fp asimd aes sha1 crc32\n', 'arm64')).toBe(false)
    expect(cpuHasSha256('', 'x64')).toBe(false)
  })

  it("parses XO's checksum strings and nothing else", () => {
    const md5 = 'd41d8cd98f00b204e9800998ecf8427e'
    expect(parseChecksum(`$1$$${md5}\n`)).toEqual({ algorithm: 'md5', text: `$1$$${md5}` })
    expect(parseChecksum(`$5$$${'a'.repeat(64)}`)?.algorithm).toBe('sha256')
    expect(parseChecksum(`$6$$${'b'.repeat(128)}`)?.algorithm).toBe('sha512')
    for (const bad of ['', `$5$$${md5}`, `$2$$${md5}`, `$1$salt$${md5}`, `${md5}`, `$1$$${md5.toUpperCase()}`]) expect(parseChecksum(bad)).toBeUndefined()
    expect(formatChecksum('sha256', 'ab')).toBe('$5$$ab')
  })
})

describe('full backup checksum file, per backup.xvaChecksum', () => {
  let sim: XapiSimulator
  let xapi: XapiClient
  let dir: { path: string; remove: () => Promise<void> }

  beforeAll(async () => {
    dir = await makeTempDir()
    sim = await startSim({ diskSizeBytes: 8 * MiB })
    xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  })
  afterAll(async () => {
    await xapi.close()
    await sim.close()
    await dir.remove()
  })

  const task = (vmUuid: string, remote: string): BackupRunTask =>
    parseTask({
      kind: 'backup.run',
      job: { id: `sum-${remote}`, name: 'checksum', mode: 'full', compression: 'zstd', vms: { uuid: [vmUuid] }, settings: { '': { exportRetention: 2, snapshotRetention: 0 } } },
      schedule: { id: 'sums' },
      remotes: { r: { url: `file://${dir.path}/${remote}` } },
      xapis: { main: { url: sim.url, credentials: { username: sim.user, password: sim.password } } },
    }) as BackupRunTask

  for (const [algorithm, id] of [['md5', '1'], ['sha256', '5']] as const) {
    it(`${algorithm}: the file is $${id}$$ of the XVA, XO's file layer verifies it and refuses a wrong one`, async () => {
      const vm = sim.listVms()[0]!
      await mkdir(join(dir.path, algorithm))
      const s = await runBackup(task(vm.uuid, algorithm), { defaults: { ...defaults, xvaChecksum: algorithm }, exporter: runDiskExport, signal: new AbortController().signal })
      expect(s.status, JSON.stringify(s, null, 1)).toBe('success')
      const ts = (s.tasks?.[0]?.result as { timestamp: string }).timestamp
      const path = `xo-vm-backups/${vm.uuid}/${ts}.xva`
      const file = join(dir.path, algorithm, path)
      const xva = await readFile(file)
      const checksum = await readFile(`${file}.checksum`, 'utf8')
      expect(checksum).toBe(`$${id}$$${createHash(algorithm).update(xva).digest('hex')}`)

      const xo = await xoHandler({ url: `file://${dir.path}/${algorithm}` })
      const readThroughXo = async (): Promise<number> => {
        const stream = await xo.createReadStream(path, { checksum: true })
        let n = 0
        const read = async (): Promise<void> => {
          for await (const c of stream) n += c.length
        }
        // XO's consumers await checksumVerified: it rejects on a mismatch, as the stream does
        await Promise.all([read(), stream.checksumVerified])
        return n
      }
      try {
        expect(await readThroughXo()).toBe(xva.length)
        const wrong = `$${id}$$${'0'.repeat(checksum.length - 4)}`
        await writeFile(`${file}.checksum`, wrong)
        await expect(readThroughXo()).rejects.toThrow(/Bad checksum/)
        if (algorithm === 'sha256') {
          // our restore checks the digest the file names, before XAPI has the whole archive
          const remote = createRemote(`file://${dir.path}/${algorithm}`)
          await remote.open()
          try {
            const [backup] = await listBackups(remote, vm.uuid)
            const vms = xapi.listVms({ includeSnapshots: true }).length
            const restore = importVmBackup({ remote, remoteSpec: { url: `file://${dir.path}/${algorithm}`, options: {} }, metadataPath: backup!.metadataPath, xapi, srUuid: xapi.listSrs()[0]!.uuid, importer: inlineImporter, signal: new AbortController().signal })
            await expect(restore).rejects.toMatchObject({ code: 'E_XVA_CORRUPT', message: expect.stringMatching(/SHA256 checksum .* its checksum file says \$5\$\$0{64}/) as unknown })
            expect(xapi.listVms({ includeSnapshots: true })).toHaveLength(vms)
          } finally {
            await remote.close()
          }
        }
      } finally {
        await xo.forget()
      }
    }, 120_000)
  }
})

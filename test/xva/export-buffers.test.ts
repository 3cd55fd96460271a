/**
 * The XVA export reads the socket into reused buffers (src/xapi/slab-pool.ts) that go back to the socket
 * once every target wrote them. Over plain HTTP and over HTTPS, a 48 MiB uncompressed export (dozens of
 * slab reuses) to a local remote (which takes the read buffers themselves) and an encrypted local remote
 * (which gets a copy): the written XVA is byte for byte what was hashed (its checksum file matches), and
 * every disk chunk in it equals the source disk at that offset and its XXH64 — so no buffer was read into
 * again before every target had written it.
 */
import { createHash } from 'node:crypto'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runXvaExport } from '../../src/backup/xva-export.js'
import { createRemote } from '../../src/remotes/index.js'
import { XapiClient } from '../../src/xapi/client.js'
import { startXapiSimulator, type XapiSimulator } from '../../src/xapi/sim/index.js'
import { readTar } from '../../src/xva/tar.js'
import { xxh64Hex } from '../../src/xva/xxhash64.js'
import { run } from '../xapi/helpers.js'
import { makeTempDir } from '../helpers/tmp.js'

const MiB = 1024 * 1024
let dir: { path: string; remove: () => Promise<void> }
const sims: XapiSimulator[] = []

beforeAll(async () => {
  dir = await makeTempDir()
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-keyout', join(dir.path, 'key.pem'), '-out', join(dir.path, 'cert.pem')])
  const options = { vms: 1, disksPerVm: 1, diskSizeBytes: 48 * MiB, fillRatio: 1, seed: 5 }
  sims.push(await startXapiSimulator(options))
  sims.push(await startXapiSimulator({ ...options, tls: { key: await readFile(join(dir.path, 'key.pem')), cert: await readFile(join(dir.path, 'cert.pem')) } }))
})
afterAll(async () => {
  await Promise.all(sims.map((s) => s.close()))
  await dir.remove()
})

async function streamOf(r: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of r) parts.push(c as Buffer)
  return Buffer.concat(parts)
}

describe('XVA export read buffers', () => {
  for (const [i, scheme] of ['http', 'https'].entries()) {
    it(`over ${scheme}: what every target wrote is what was hashed and what the disk holds`, async () => {
      const sim = sims[i]!
      const client = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password, allowUnauthorized: true })
      try {
        const vm = client.listVms()[0]!
        const descriptor = await client.vmExportDescriptor(vm.$ref, 'false')
        const targets = [
          { id: 'plain', url: `file://${dir.path}/${scheme}-plain`, options: {}, path: 'vm.xva' },
          { id: 'enc', url: `file://${dir.path}/${scheme}-enc`, options: { encryptionKey: 'k'.repeat(32) }, path: 'vm.xva' },
        ]
        for (const t of targets) await mkdir(new URL(t.url).pathname, { recursive: true })
        const r = await runXvaExport({ descriptor, compression: 'none', checksumAlgorithm: 'sha256', targets }, { signal: new AbortController().signal })
        expect(r.failed).toEqual([])
        expect(r.succeeded).toEqual(['enc', 'plain'])
        const xva = await readFile(join(dir.path, `${scheme}-plain`, 'vm.xva'))
        expect(xva.length).toBe(r.sizeBytes)
        expect(await readFile(join(dir.path, `${scheme}-plain`, 'vm.xva.checksum'), 'utf8')).toBe(`$5$$${createHash('sha256').update(xva).digest('hex')}`)

        const disk = await streamOf(sim.rawDiskContent(sim.listVms()[0]!.vdis[0]!.uuid))
        let chunks = 0
        let last: { name: string; data: Buffer } | undefined
        for await (const e of readTar(Readable.from([xva]))) {
          if (/^Ref:\d+\/\d{8}$/.test(e.name)) {
            const offset = Number(e.name.slice(-8)) * MiB
            expect(e.data.equals(disk.subarray(offset, offset + MiB)), e.name).toBe(true)
            last = { name: e.name, data: e.data }
            chunks++
          } else if (e.name.endsWith('.xxhash')) {
            expect(e.name).toBe(`${last?.name}.xxhash`)
            expect(e.data.toString('latin1')).toBe(xxh64Hex(last!.data))
          }
        }
        expect(chunks).toBe(48)
        // the encrypted target got the same bytes (through its copy): read back through our remote
        const enc = createRemote(targets[1]!.url, targets[1]!.options)
        await enc.open()
        try {
          expect((await streamOf(await enc.createReadStream('vm.xva'))).equals(xva)).toBe(true)
        } finally {
          await enc.close()
        }
      } finally {
        await client.close()
      }
    }, 120_000)
  }
})

/**
 * The simulator's XVA export and import through the real xen-api client's session and tasks: the archive
 * is a tar of ova.xml then `Ref:<n>/<8 digits>` 1 MiB chunks each followed by its `.xxhash` (XXH64 of
 * the chunk), zero chunks skipped but the first and last; plain, gzip and zstd; an import recreates the
 * VM with disks equal to the source; a corrupt chunk or a truncated archive fails with IMPORT_ERROR and
 * leaves no VM or VDI behind.
 */
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { XapiClient } from '../../src/xapi/client.js'
import { startXapiSimulator, type XapiSimulator } from '../../src/xapi/sim/index.js'
import { decompressStream, detectCompression } from '../../src/xva/compression.js'
import { openXvaExport, putXvaImport } from '../../src/xva/http.js'
import { parseOvaXml } from '../../src/xva/ova-xml.js'
import { readTar } from '../../src/xva/tar.js'
import { xxh64Hex } from '../../src/xva/xxhash64.js'

const MiB = 1024 * 1024
let sim: XapiSimulator
let xapi: XapiClient

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of stream) parts.push(c)
  return Buffer.concat(parts)
}

async function exportXva(vmRef: string, useCompression: string): Promise<Buffer> {
  const d = await xapi.vmExportDescriptor(vmRef, useCompression)
  const body = await collect(await openXvaExport(d))
  await xapi.waitTask(d.taskRef)
  return body
}

async function importXva(xva: Buffer): Promise<string> {
  const d = await xapi.vmImportDescriptor(xapi.listSrs()[0]!.$ref)
  await putXvaImport(d, Readable.from([xva]), xva.length)
  const result = (await xapi.waitTask(d.taskRef)) as string[]
  return result[0]!
}

const sha = async (s: Readable) => createHash('sha256').update(await collect(s)).digest('hex')

beforeAll(async () => {
  sim = await startXapiSimulator({ vms: 1, disksPerVm: 2, diskSizeBytes: 8 * MiB, fillRatio: 0.5, seed: 7, networks: 2 })
  xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
})
afterAll(async () => {
  await xapi.close()
  await sim.close()
})

describe('simulator XVA', () => {
  it('exports a tar as XAPI lays it out, with XXH64 per chunk', async () => {
    const vm = sim.listVms()[0]!
    const xva = await exportXva(vm.ref, 'false')
    expect(xva.subarray(-1024).every((b) => b === 0)).toBe(true)
    const names: string[] = []
    let prev: { name: string; data: Buffer } | undefined
    let header: ReturnType<typeof parseOvaXml> | undefined
    for await (const e of readTar(Readable.from([xva]))) {
      names.push(e.name)
      if (e.name === 'ova.xml') header = parseOvaXml(e.data.toString('utf8'))
      else if (e.name.endsWith('.xxhash')) {
        expect(prev?.name).toBe(e.name.slice(0, -'.xxhash'.length))
        expect(e.data.toString()).toBe(xxh64Hex(prev!.data))
        expect(e.data.toString()).toMatch(/^[0-9A-F]{16}$/)
      } else prev = { name: e.name, data: Buffer.from(e.data) }
    }
    expect(names[0]).toBe('ova.xml')
    if (header === undefined) throw new Error("no ova.xml")
    expect(header.objects[0]!.class).toBe('VM')
    const vdiIds = header.objects.filter((o) => o.class === 'VDI').map((o) => o.id)
    expect(vdiIds).toHaveLength(2)
    for (const id of vdiIds) {
      const chunks = names.filter((n) => n.startsWith(`${id}/`) && !n.endsWith('.xxhash')).map((n) => Number(n.split('/')[1]))
      expect(chunks[0]).toBe(0)
      expect(chunks.at(-1)).toBe(7) // 8 MiB: chunk 7 is the last, always sent
      expect(chunks.length).toBeLessThan(8) // half the blocks hold data: zero chunks are skipped
      expect(names.filter((n) => n.startsWith(`${id}/`) && !n.endsWith('.xxhash')).every((n) => /^Ref:\d+\/\d{8}$/.test(n))).toBe(true)
    }
  })

  it.each(['false', 'true', 'zstd'])('round-trips a VM (use_compression=%s): same disks', async (c) => {
    const vm = sim.listVms()[0]!
    const xva = await exportXva(vm.ref, c)
    expect(detectCompression(xva)).toBe(c === 'true' ? 'gzip' : c === 'zstd' ? 'zstd' : 'none')
    if (c !== 'false') expect((await collect(Readable.from([xva]).pipe(decompressStream(detectCompression(xva) as 'gzip')))).subarray(257, 262).toString()).toBe('ustar')
    const ref = await importXva(xva)
    const restored = await xapi.waitObject('VM', ref)
    expect(restored.is_a_snapshot).toBe(false)
    const disks = xapi.vmDisks(ref)
    expect(disks).toHaveLength(2)
    for (const [i, d] of disks.entries()) expect(await sha(sim.rawDiskContent(d.vdi.uuid))).toBe(await sha(sim.rawDiskContent(vm.vdis[i]!.uuid)))
    expect(restored.VIFs.length).toBe(xapi.get('VM', vm.ref).VIFs.length)
  })

  it('refuses a corrupt chunk or a truncated archive with IMPORT_ERROR and creates nothing', async () => {
    const vm = sim.listVms()[0]!
    const xva = await exportXva(vm.ref, 'false')
    const before = { vms: xapi.listVms().length, vdis: xapi.listVdis().length }
    const corrupt = Buffer.from(xva)
    corrupt[xva.length - 1024 - 512 - 512 - 100]! ^= 0xff // inside the last chunk's data
    await expect(importXva(corrupt)).rejects.toMatchObject({ fields: { xapiCode: 'IMPORT_ERROR' } })
    await expect(importXva(xva.subarray(0, xva.length - 3 * 1024 * 1024))).rejects.toMatchObject({ fields: { xapiCode: 'IMPORT_ERROR' } })
    expect({ vms: xapi.listVms().length, vdis: xapi.listVdis().length }).toEqual(before)
  })
})

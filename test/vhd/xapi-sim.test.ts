/**
 * The VHD engine over real export streams: the XAPI simulator (src/xapi/sim) driven through the real
 * `xen-api` client (XapiClient), full and delta exports parsed and written to VhdFile and brotli
 * VhdDirectory, the resulting chain compared with the simulator's raw disk; injected faults (reset
 * mid-stream, corrupted footer) fail the copy and publish nothing.
 */
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { LocalRemote } from '../../src/remotes/local.js'
import { XapiClient } from '../../src/xapi/client.js'
import { startXapiSimulator, type XapiSimulator } from '../../src/xapi/sim/index.js'
import { checkChain, openChain } from '../../src/vhd/chain.js'
import { createVhdDirectorySink } from '../../src/vhd/directory-sink.js'
import { createVhdFileSink } from '../../src/vhd/file-sink.js'
import { pumpVhd } from '../../src/vhd/sink.js'
import { openVhdStream } from '../../src/vhd/stream-parser.js'
import { useTempDir } from '../helpers/tmp.js'
import { localRemote } from './remote.js'

const MiB = 1024 * 1024
const tmp = useTempDir('bp-vhd-sim-')

async function sha256(stream: Readable): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of stream as AsyncIterable<Buffer>) hash.update(chunk)
  return hash.digest('hex')
}

describe('VHD engine over XAPI simulator exports', () => {
  let sim: XapiSimulator
  let client: XapiClient
  let remote: LocalRemote
  beforeAll(async () => {
    sim = await startXapiSimulator({ vms: 1, diskSizeBytes: 22 * MiB, disksPerVm: 1, fillRatio: 0.6, seed: 11 })
    client = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
    remote = await localRemote(join(tmp(), 'remote'))
  })
  afterAll(async () => {
    await client?.close()
    await sim?.close()
  })

  it('writes a full then a delta export as VhdFile and brotli VhdDirectory chains equal to the raw disk', async () => {
    const vm = client.listVms()[0]!
    const s1 = await client.snapshotVm(vm.$ref, 'base')
    const base = client.vmDisks(s1.$ref)[0]!.vdi
    const e1 = await client.openExport(base.$ref, { format: 'vhd' })
    const full = await openVhdStream(e1.stream)
    expect(full.footer.uuid).toBe(base.uuid)
    const dir = `xo-vm-backups/${vm.uuid}/vdis/job/${base.uuid}`
    await pumpVhd(full, [createVhdFileSink(remote, `${dir}/20260101T000000Z.vhd`), createVhdDirectorySink(remote, `${dir}/20260101T000000Z.alias.vhd`, { compression: 'brotli' })])

    sim.writeBlocks(vm.uuid, { blocks: 3 })
    const s2 = await client.snapshotVm(vm.$ref, 'delta')
    const child = client.vmDisks(s2.$ref)[0]!.vdi
    const e2 = await client.openExport(child.$ref, { format: 'vhd', baseRef: base.$ref })
    const delta = await openVhdStream(e2.stream)
    expect(delta.footer.diskType).toBe(4)
    expect(delta.blockOrder).toHaveLength(3)
    const parentOf = (p: string) => ({ relativePath: p, uuid: full.footer.uuid, timestamp: full.footer.timestamp })
    await pumpVhd(delta, [
      createVhdFileSink(remote, `${dir}/20260102T000000Z.vhd`, { parent: parentOf('20260101T000000Z.vhd') }),
      createVhdDirectorySink(remote, `${dir}/20260102T000000Z.alias.vhd`, { compression: 'brotli', parent: parentOf('20260101T000000Z.alias.vhd') }),
    ])

    const expected = await sha256(sim.rawDiskContent(child.uuid))
    for (const p of ['20260102T000000Z.vhd', '20260102T000000Z.alias.vhd']) {
      const chain = await openChain(remote, `${dir}/${p}`)
      expect(chain.vhds).toHaveLength(2)
      expect(await sha256(chain.rawStream())).toBe(expected)
      expect((await checkChain(remote, `${dir}/${p}`)).warnings).toEqual([])
    }
  })

  for (const fault of [
    { kind: 'reset' as const, afterBytes: 3 * MiB },
    { kind: 'corrupt' as const, offset: 70 },
  ]) {
    it(`a ${fault.kind} fault fails the copy and publishes nothing`, async () => {
      const vm = client.listVms()[0]!
      const vdi = client.vmDisks(vm.$ref)[0]!.vdi
      sim.setFault({ ...fault, times: 1 })
      const dir = `faults/${fault.kind}`
      try {
        const e = await client.openExport(vdi.$ref, { format: 'vhd' })
        const error: unknown = await openVhdStream(e.stream)
          .then((vhd) => pumpVhd(vhd, [createVhdFileSink(remote, `${dir}/a.vhd`), createVhdDirectorySink(remote, `${dir}/b.alias.vhd`)]))
          .then(
            () => undefined,
            (err: unknown) => err,
          )
        expect(error).toBeInstanceOf(Error)
        if (fault.kind === 'corrupt') expect(error).toMatchObject({ code: 'E_VHD_CORRUPT', fields: { structure: 'footer', field: 'checksum' } })
      } finally {
        sim.clearFaults()
      }
      const left = (await remote.exists(dir)) ? await remote.list(dir, { recursive: true, includeHidden: true }) : []
      expect(left.filter((x) => !x.isDirectory)).toEqual([])
    })
  }
})

/**
 * The simulator's NBD server and CBT through the real xen-api client, read by our NBD client and by an
 * independent one (qemu-img over nbd://): every byte equals the simulator's disk; TLS pinning, an
 * unreachable server, a reset mid-read (retried, then E_NBD_READ), no NBD network; CBT bitmaps as XAPI
 * encodes them, data_destroy, a broken chain.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { XapiClient } from '../../src/xapi/client.js'
import type { NbdServerInfo } from '../../src/xapi/nbd/client.js'
import { NbdDisk } from '../../src/xapi/nbd/multi.js'
import { startXapiSimulator, type XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { run } from './helpers.js'

const MiB = 1024 * 1024
let dir: { path: string; remove: () => Promise<void> }
let tls: { key: Buffer; cert: Buffer }
let otherCert: string

async function keyPair(name: string): Promise<{ key: Buffer; cert: Buffer }> {
  const key = join(dir.path, `${name}.key`)
  const cert = join(dir.path, `${name}.pem`)
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=xapi-sim host', '-keyout', key, '-out', cert])
  return { key: await readFile(key), cert: await readFile(cert) }
}

async function withSim<T>(nbd: Parameters<typeof startXapiSimulator>[0]['nbd'], fn: (sim: XapiSimulator, client: XapiClient) => Promise<T>): Promise<T> {
  const sim = await startXapiSimulator({ vms: 1, disksPerVm: 1, diskSizeBytes: 16 * MiB, fillRatio: 0.6, seed: 77, ...(nbd === undefined ? {} : { nbd }) })
  const client = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
  try {
    return await fn(sim, client)
  } finally {
    await client.close()
    await sim.close()
  }
}

async function readAll(disk: NbdDisk): Promise<Buffer> {
  const out = Buffer.alloc(disk.sizeBytes)
  const reads: Promise<Buffer>[] = []
  for (let o = 0; o < disk.sizeBytes; o += 2 * MiB) reads.push(disk.read(o, out.subarray(o, Math.min(o + 2 * MiB, disk.sizeBytes))))
  await Promise.all(reads)
  return out
}

async function rawOf(sim: XapiSimulator, vdiUuid: string): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of sim.rawDiskContent(vdiUuid)) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

const nbdInfo = async (client: XapiClient, vdiRef: string) => (await client.call('VDI.get_nbd_info', vdiRef)) as NbdServerInfo[]

beforeAll(async () => {
  dir = await makeTempDir('bp-nbd-')
  tls = await keyPair('host')
  otherCert = (await keyPair('other')).cert.toString()
})
afterAll(async () => {
  await dir?.remove()
})

describe('simulator NBD server', () => {
  it('insecure_nbd: our client (1 and 3 connections) and qemu-img read the disk byte for byte', async () => {
    await withSim({}, async (sim, client) => {
      const vdi = sim.listVms()[0]!.vdis[0]!
      const infos = await nbdInfo(client, vdi.ref)
      expect(infos).toHaveLength(1)
      expect(infos[0]).toMatchObject({ cert: '', exportname: expect.stringMatching(new RegExp(`^/${vdi.uuid}\\?session_id=`)) as unknown })
      const raw = await rawOf(sim, vdi.uuid)
      for (const concurrency of [1, 3]) {
        const disk = await NbdDisk.open(infos, { concurrency })
        expect(disk.connections).toBe(concurrency)
        expect((await readAll(disk)).equals(raw)).toBe(true)
        await disk.close()
      }
      const out = join(dir.path, 'qemu.raw')
      const i = infos[0]!
      await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nbd://${i.address}:${i.port}/${encodeURIComponent(i.exportname)}`, out])
      expect((await readFile(out)).equals(raw)).toBe(true)
    })
  })

  it('nbd purpose: TLS with the pinned certificate; another certificate is E_NBD_TLS', async () => {
    await withSim({ tls }, async (sim, client) => {
      const vdi = sim.listVms()[0]!.vdis[0]!
      const infos = await nbdInfo(client, vdi.ref)
      expect(infos[0]!.cert).toBe(tls.cert.toString())
      const disk = await NbdDisk.open(infos, { concurrency: 2 })
      expect((await readAll(disk)).equals(await rawOf(sim, vdi.uuid))).toBe(true)
      await disk.close()
      sim.setNbdFault({ kind: 'tls-mismatch', cert: otherCert })
      await expect(NbdDisk.open(await nbdInfo(client, vdi.ref), { concurrency: 2 })).rejects.toMatchObject({ code: 'E_NBD_TLS' })
      // without TLS the server refuses every option: a client that skips STARTTLS is refused
      await expect(NbdDisk.open([{ ...infos[0]!, cert: '' }], { concurrency: 1 })).rejects.toMatchObject({ code: 'E_NBD_NEGOTIATION' })
    })
  })

  it('unreachable server, no NBD network, unknown export: coded errors', async () => {
    await withSim({}, async (sim, client) => {
      const vdi = sim.listVms()[0]!.vdis[0]!
      const infos = await nbdInfo(client, vdi.ref)
      await expect(NbdDisk.open([{ ...infos[0]!, exportname: `/${vdi.uuid}?session_id=OpaqueRef:nope` }], { concurrency: 1 })).rejects.toMatchObject({ code: 'E_NBD_NEGOTIATION' })
      sim.setNbdFault({ kind: 'unreachable' })
      await expect(NbdDisk.open(await nbdInfo(client, vdi.ref), { concurrency: 2 })).rejects.toMatchObject({ code: 'E_NBD_UNREACHABLE' })
    })
    await withSim({ purpose: 'none' }, async (sim, client) => {
      const vdi = sim.listVms()[0]!.vdis[0]!
      expect(await nbdInfo(client, vdi.ref)).toEqual([])
      const net = ((await client.call('network.get_all')) as string[])[0]!
      await client.call('network.add_purpose', net, 'insecure_nbd')
      expect(await nbdInfo(client, vdi.ref)).toHaveLength(1)
      await expect(NbdDisk.open([], { concurrency: 1 })).rejects.toMatchObject({ code: 'E_NBD_UNREACHABLE' })
    })
  })

  it('a reset mid-read is retried on a new connection; resets on every connection, or a stalled server, end in E_NBD_READ', async () => {
    await withSim({}, async (sim, client) => {
      const vdi = sim.listVms()[0]!.vdis[0]!
      const infos = await nbdInfo(client, vdi.ref)
      const raw = await rawOf(sim, vdi.uuid)
      // the next connection is reset after 3 MiB of data; its replacement is not
      sim.setNbdFault({ kind: 'reset', afterBytes: 3 * MiB, times: 1 })
      const d1 = await NbdDisk.open(infos, { concurrency: 1 })
      expect((await readAll(d1)).equals(raw)).toBe(true)
      await d1.close()
      sim.setNbdFault({ kind: 'reset', afterBytes: MiB })
      const d2 = await NbdDisk.open(infos, { concurrency: 2, readRetries: 2 })
      await expect(readAll(d2)).rejects.toMatchObject({ code: 'E_NBD_READ' })
      await d2.close()
      // a server that stops sending mid-read: the inactivity timeout fails the read, never a short block
      sim.clearNbdFaults()
      sim.setNbdFault({ kind: 'stall', afterBytes: MiB })
      const d3 = await NbdDisk.open(infos, { concurrency: 1, readRetries: 1, inactivityTimeoutMs: 300 })
      await expect(readAll(d3)).rejects.toMatchObject({ code: 'E_NBD_READ', message: expect.stringContaining('no data for 300 ms') as unknown })
      await d3.close()
    })
  })
})

describe('simulator CBT', () => {
  it('enable_cbt, list_changed_blocks (64 KiB bits, base64), data_destroy, disable, a broken chain', async () => {
    await withSim({}, async (sim, client) => {
      const vm = sim.listVms()[0]!
      const vdi = vm.vdis[0]!
      await client.call('VDI.enable_cbt', vdi.ref)
      expect(await client.call('VDI.get_cbt_enabled', vdi.ref)).toBe(true)
      const snapVdi = async (label: string): Promise<string> => {
        const snap = (await client.call('VM.snapshot', vm.ref, label)) as string
        const vbds = (await client.call('VM.get_VBDs', snap)) as string[]
        return (await client.call('VBD.get_VDI', vbds[0])) as string
      }
      const s1 = await snapVdi('s1')
      expect(await client.call('VDI.get_cbt_enabled', s1)).toBe(true)
      const written = sim.writeBlocks(vm.uuid, { blocks: 3 })[0]!.blocks
      const s2 = await snapVdi('s2')
      const bitmap = Buffer.from((await client.call('VDI.list_changed_blocks', s1, s2)) as string, 'base64')
      expect(bitmap.length).toBe((16 * MiB) / (64 * 1024) / 8)
      const changed = [...Array(8).keys()].filter((b) => bitmap.readUInt32BE(b * 4) !== 0)
      expect(changed).toEqual(written)
      for (const b of written) expect(bitmap.readUInt32BE(b * 4)).toBe(0xffffffff)
      // data_destroy: needs no VBD (XO destroys the snapshot VM first), keeps the CBT metadata
      await expect(client.call('VDI.data_destroy', s1)).rejects.toMatchObject({ fields: { xapiCode: 'VDI_IN_USE' } })
      const vbd = ((await client.call('VDI.get_VBDs', s1)) as string[])[0]!
      await client.call('VM.destroy', await client.call('VBD.get_VM', vbd))
      await client.call('VDI.data_destroy', s1)
      expect(await client.call('VDI.get_type', s1)).toBe('cbt_metadata')
      expect(Buffer.from((await client.call('VDI.list_changed_blocks', s1, s2)) as string, 'base64').equals(bitmap)).toBe(true)
      const session = (await (await fetch(`${sim.url}/jsonrpc`, { method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'session.login_with_password', params: [sim.user, sim.password] }) })).json()) as { result: string }
      const res = await fetch(`${sim.url}/export_raw_vdi/?session_id=${session.result}&vdi=${s2}&base=${s1}&format=vhd`)
      expect([res.status, await res.text()]).toEqual([400, expect.stringContaining('VDI_INCOMPATIBLE_TYPE') as unknown])
      sim.setCbtBadBitmapLength(1)
      expect(Buffer.from((await client.call('VDI.list_changed_blocks', s1, s2)) as string, 'base64').length).toBe(bitmap.length - 1)
      // a migration (new log) breaks the chain; disabling removes the metadata
      sim.resetCbtChain(vdi.uuid)
      await expect(client.call('VDI.list_changed_blocks', s2, vdi.ref)).rejects.toMatchObject({ fields: { xapiCode: 'SR_BACKEND_FAILURE_460' } })
      await client.call('VDI.disable_cbt', vdi.ref)
      await expect(client.call('VDI.list_changed_blocks', s2, vdi.ref)).rejects.toMatchObject({ fields: { xapiCode: 'VDI_NO_CBT_METADATA' } })
    })
  })
})

/**
 * The simulator's `PUT /import_raw_vdi?format=vhd` of a differencing VHD onto an existing VDI (what a
 * replication's delta does): sectors the delta's bitmaps mark set replace the VDI's bytes, the others keep
 * them, blocks absent from the delta stay as they were. Checked through the real client (raw export).
 */
import { Readable } from 'node:stream'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { putVdiImport } from '../../src/xapi/restore-import.js'
import { XapiClient } from '../../src/xapi/client.js'
import { startXapiSimulator, type XapiSimulator } from '../../src/xapi/sim/index.js'
import { FULL_BITMAP, vhdLayout } from '../../src/xapi/sim/vhd-encoder.js'

const BLOCK = 2 * 1024 * 1024
let sim: XapiSimulator
let xapi: XapiClient

beforeAll(async () => {
  sim = await startXapiSimulator({ vms: 1, disksPerVm: 1, diskSizeBytes: 2 * BLOCK, fillRatio: 0, seed: 7 })
  xapi = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
})
afterAll(async () => {
  await xapi?.close()
  await sim?.close()
})

function vhd(blocks: { index: number; bitmap: Buffer; data: Buffer }[], parent: boolean): Buffer {
  const layout = vhdLayout({
    virtualSizeBytes: 2 * BLOCK,
    uniqueId: '11111111-2222-3333-4444-555555555555',
    timestampMs: Date.now(),
    blocks: blocks.map((b) => b.index),
    ...(parent ? { parent: { uniqueId: '66666666-2222-3333-4444-555555555555', timestampMs: Date.now(), name: 'parent.vhd' } } : {}),
  })
  return Buffer.concat([layout.head, ...blocks.flatMap((b) => [b.bitmap, b.data]), layout.footer])
}

async function importInto(vdiRef: string, body: Buffer): Promise<void> {
  const d = await xapi.importDescriptor(vdiRef, 'vhd')
  const settled = xapi.waitTask(d.taskRef)
  await putVdiImport(d, Readable.from([body]), { sizeBytes: body.length })
  await settled
}

it('a differencing VHD applies onto the VDI: set sectors replaced, unset sectors and absent blocks kept', async () => {
  const srRef = xapi.listSrs()[0]!.$ref
  const vdiRef = await xapi.createVdi({ nameLabel: 'delta target', srRef, virtualSizeBytes: 2 * BLOCK })
  await importInto(vdiRef, vhd([{ index: 0, bitmap: FULL_BITMAP, data: Buffer.alloc(BLOCK, 0xaa) }, { index: 1, bitmap: FULL_BITMAP, data: Buffer.alloc(BLOCK, 0xcc) }], false))
  const bitmap = Buffer.alloc(FULL_BITMAP.length)
  bitmap[0] = 0x80 // sector 0 only
  await importInto(vdiRef, vhd([{ index: 0, bitmap, data: Buffer.alloc(BLOCK, 0xbb) }], true))
  const exp = await xapi.openExport(vdiRef, { format: 'raw' })
  const chunks: Buffer[] = []
  for await (const c of exp.stream as AsyncIterable<Buffer>) chunks.push(c)
  const raw = Buffer.concat(chunks)
  expect(raw.length).toBe(2 * BLOCK)
  expect(raw.subarray(0, 512).every((b) => b === 0xbb)).toBe(true)
  expect(raw.subarray(512, BLOCK).every((b) => b === 0xaa)).toBe(true)
  expect(raw.subarray(BLOCK).every((b) => b === 0xcc)).toBe(true)
}, 60_000)

/**
 * The plain-http export's chunk mode (socket-export.ts `chunkBuffer`): the body is read into the
 * caller's buffers, each yielded whole once filled, with the same bytes as a normal export and the same
 * error mapping.
 */
import { createHash } from 'node:crypto'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { XapiError } from '../../src/common/errors.js'
import { XapiClient } from '../../src/xapi/client.js'
import { openVdiExport, type VdiExportDescriptor } from '../../src/xapi/export.js'
import { startXapiSimulator, type XapiSimulator } from '../../src/xapi/sim/index.js'

const MiB = 1024 * 1024

describe('export chunk mode', () => {
  let sim: XapiSimulator
  let client: XapiClient
  let descriptor: () => Promise<VdiExportDescriptor>

  beforeAll(async () => {
    sim = await startXapiSimulator({ vms: 1, diskSizeBytes: 24 * MiB, disksPerVm: 1, fillRatio: 0.5, seed: 11 })
    client = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password })
    const vdiRef = sim.listVms()[0]!.vdis[0]!.ref
    descriptor = () => client.exportDescriptor(vdiRef, { format: 'vhd' })
  })
  afterEach(() => sim.clearFaults())
  afterAll(async () => {
    await client?.close()
    await sim?.close()
  })

  it('yields each given buffer whole, in order, with the bytes of a normal export', async () => {
    const plain = createHash('sha256')
    const normal = await openVdiExport(await descriptor())
    for await (const chunk of normal.stream as AsyncIterable<Buffer>) plain.update(chunk)

    // odd sizes so that buffers end in the middle of socket reads
    const sizes = [100, 3 * MiB + 17, 64 * 1024 + 3]
    const given: { offset: number; buffer: Buffer }[] = []
    const exp = await openVdiExport({
      ...(await descriptor()),
      chunkBuffer: (offset) => {
        const buffer = Buffer.alloc(sizes[given.length % sizes.length]!)
        given.push({ offset, buffer })
        return buffer
      },
    })
    const hash = createHash('sha256')
    const chunks: Buffer[] = []
    for await (const chunk of exp.stream as AsyncIterable<Buffer>) {
      chunks.push(chunk)
      hash.update(chunk)
    }
    expect(hash.digest('hex')).toBe(plain.digest('hex'))
    expect(exp.sizeBytes).toBeGreaterThan(8 * MiB)
    expect(chunks.reduce((n, c) => n + c.length, 0)).toBe(exp.sizeBytes)
    // after the bytes that came with the response head (one chunk of the socket's own), every chunk
    // is the next given buffer, full but the last one, at the offset it was asked for
    const body = chunks.slice(chunks.length - given.length)
    expect(body.length).toBeGreaterThan(5)
    let offset = chunks.slice(0, chunks.length - given.length).reduce((n, c) => n + c.length, 0)
    body.forEach((chunk, i) => {
      const g = given[i]!
      expect(chunk.buffer).toBe(g.buffer.buffer)
      expect(g.offset).toBe(offset)
      if (i < body.length - 1) expect(chunk.length).toBe(g.buffer.length)
      offset += chunk.length
    })
  })

  it('takes the next buffer only when the stream is read, not as soon as the previous one is full', async () => {
    // a consumer like the disk export's (flowing mode, paused while it works on a chunk): the socket
    // fills the buffer it has, then stops; a buffer taken before the stream is read again is a pooled
    // 2 MiB block held for nothing, per disk in flight
    const plain = createHash('sha256')
    for await (const chunk of (await openVdiExport(await descriptor())).stream as AsyncIterable<Buffer>) plain.update(chunk)
    const SIZE = 256 * 1024
    let given = 0
    let consumed = 0
    let mostAhead = 0
    const exp = await openVdiExport({
      ...(await descriptor()),
      chunkBuffer: () => {
        given++
        return Buffer.alloc(SIZE)
      },
    })
    const hash = createHash('sha256')
    const stream = exp.stream
    await new Promise<void>((resolve, reject) => {
      stream.on('data', (chunk: Buffer) => {
        hash.update(chunk)
        if (chunk.length !== SIZE) return
        consumed++
        stream.pause()
        // time for the socket to fill the buffer it holds and stop
        setTimeout(() => {
          mostAhead = Math.max(mostAhead, given - consumed)
          stream.resume()
        }, 5)
      })
      stream.once('end', resolve)
      stream.once('error', reject)
    })
    expect(hash.digest('hex')).toBe(plain.digest('hex'))
    expect(consumed).toBeGreaterThan(20)
    // while paused: none (the socket stopped with the chunk the consumer got, and takes the next on resume)
    expect(mostAhead).toBe(0)
  })

  it('maps a connection reset mid-body like a normal export', async () => {
    sim.setFault({ kind: 'reset', afterBytes: 5 * MiB })
    const exp = await openVdiExport({ ...(await descriptor()), chunkBuffer: () => Buffer.alloc(2 * MiB) })
    let received = 0
    const error = await (async () => {
      for await (const chunk of exp.stream as AsyncIterable<Buffer>) received += chunk.length
    })().catch((e: unknown) => e)
    expect(error).toBeInstanceOf(XapiError)
    expect((error as XapiError).fields).toMatchObject({ transient: true })
    expect(received).toBeLessThanOrEqual(5 * MiB)
  })
})

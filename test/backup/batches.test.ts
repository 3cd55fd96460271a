import { PassThrough, Readable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { batchesOf } from '../../src/backup/chunks.js'

async function collect(stream: Readable, min: number): Promise<Buffer[][]> {
  const out: Buffer[][] = []
  for await (const b of batchesOf(stream, min, 2)) out.push(b)
  return out
}

describe('batchesOf', () => {
  it('gathers chunks, uncopied and in order, into batches of at least minBytes, the last one shorter', async () => {
    const chunks = Array.from({ length: 25 }, (_, i) => Buffer.alloc(100, i))
    const batches = await collect(Readable.from(chunks, { objectMode: false }), 350)
    expect(batches.map((b) => b.length)).toEqual([4, 4, 4, 4, 4, 4, 1])
    expect(batches.flat()).toEqual(chunks)
    expect(batches.flat()[0]!.buffer).toBe(chunks[0]!.buffer)
  })

  it('reads a slow consumer\'s stream with backpressure and no loss', async () => {
    const source = new PassThrough({ highWaterMark: 64 })
    const written = Buffer.alloc(64 * 1024)
    for (let i = 0; i < written.length; i++) written[i] = i % 251
    const writing = (async () => {
      for (let at = 0; at < written.length; at += 512) if (!source.write(written.subarray(at, at + 512))) await new Promise((r) => source.once('drain', r))
      source.end()
    })()
    const got: Buffer[] = []
    for await (const b of batchesOf(source, 4096, 1)) {
      got.push(...b)
      await new Promise((r) => setImmediate(r))
    }
    await writing
    expect(Buffer.concat(got)).toEqual(written)
  })

  it('fails with the stream, and ends on a close without end (the caller sees the short length)', async () => {
    const failing = new PassThrough()
    const it1 = collect(failing, 10)
    failing.write(Buffer.alloc(5))
    failing.destroy(new Error('boom'))
    await expect(it1).rejects.toThrow('boom')
    const closing = new PassThrough()
    const it2 = collect(closing, 100)
    closing.write(Buffer.alloc(5))
    await new Promise((r) => setImmediate(r))
    closing.destroy()
    expect((await it2).flat().reduce((n, b) => n + b.length, 0)).toBe(5)
  })
})

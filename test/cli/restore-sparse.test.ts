/**
 * `restore <url> --vm --disk --to x.raw` writes a sparse image: a half-empty disk backed up from the XAPI
 * simulator to a local remote restores to a file whose content is the disk's, byte for byte, and whose
 * allocated size (stat blocks) is about the data, not the disk's size. The writer itself leaves a hole
 * for every zero run, whether it came from an unallocated block or from a block of zeros, chunks cut
 * anywhere, zeros at the end included.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runDiskExport } from '../../src/backup/disk-export.js'
import { runBackup } from '../../src/backup/run.js'
import { HOLE_UNIT_BYTES, SparseFileWriter } from '../../src/backup/sparse-file.js'
import type { CliIo } from '../../src/cli/context.js'
import { runCli } from '../../src/cli/program.js'
import type { XapiSimulator } from '../../src/xapi/sim/index.js'
import { makeTempDir } from '../helpers/tmp.js'
import { defaults, MiB, runTask, saveRaw, startSim } from '../backup/helpers/fixture.js'

let sim: XapiSimulator
let dir: { path: string; remove: () => Promise<void> }

function io(): CliIo & { out: () => string; err: () => string } {
  let out = ''
  let err = ''
  return { stdout: (t) => void (out += t), stderr: (t) => void (err += t), isTTY: false, out: () => out, err: () => err }
}

/** Bytes the file occupies on disk (st_blocks are 512-byte units whatever the file system's block). */
async function allocatedBytes(path: string): Promise<number> {
  return (await stat(path)).blocks * 512
}

beforeAll(async () => {
  dir = await makeTempDir('bp-cli-sparse-')
  sim = await startSim({ vms: 1, disksPerVm: 1, diskSizeBytes: 32 * MiB, fillRatio: 0.5 })
})

afterAll(async () => {
  await sim?.close()
  await dir?.remove()
})

describe('sparse raw restore', () => {
  it('restores a half-empty disk to a .raw file equal to the source, with its holes left unallocated', async () => {
    const vm = sim.listVms()[0]!
    const vdi = vm.vdis[0]!
    const root = join(dir.path, 'remote')
    await mkdir(root)
    const summary = await runBackup(runTask(sim, [vm.uuid], { r: `file://${root}` }), { defaults, exporter: runDiskExport, signal: new AbortController().signal })
    expect(summary.status, JSON.stringify(summary)).toBe('success')
    const source = join(dir.path, 'source.raw')
    await saveRaw(sim, vdi.uuid, source)

    const to = join(dir.path, 'restored.raw')
    const o = io()
    expect(await runCli(['restore', `file://${root}`, '--vm', vm.uuid, '--disk', vdi.uuid, '--to', to], o), o.err()).toBe(0)
    expect((await readFile(to)).equals(await readFile(source))).toBe(true)
    const apparent = (await stat(to)).size
    expect(apparent).toBe(32 * MiB)
    // half the blocks hold data: the file occupies about half its length, never all of it
    const allocated = await allocatedBytes(to)
    expect(allocated).toBeGreaterThan(0)
    expect(allocated).toBeLessThan(apparent * 0.7)
    expect(o.out()).toMatch(/sparse: [\d.]+ MiB of data, the rest holes/)

    const json = io()
    expect(await runCli(['restore', `file://${root}`, '--vm', vm.uuid, '--disk', vdi.uuid, '--to', join(dir.path, 'json.raw'), '--json'], json)).toBe(0)
    const r = JSON.parse(json.out()) as { writtenBytes: number; dataBytes: number }
    expect(r.writtenBytes).toBe(32 * MiB)
    expect(r.dataBytes).toBeLessThan(r.writtenBytes * 0.7)
    expect(r.dataBytes).toBeGreaterThan(0)
  })

  it('SparseFileWriter: zero runs (any chunking, at the end too) become holes; the content reads back the same', async () => {
    const unit = HOLE_UNIT_BYTES
    // data, 4 units of zeros, data not aligned to a unit, 1 MiB of zeros at the end
    const image = Buffer.concat([randomBytes(unit * 2), Buffer.alloc(unit * 4), randomBytes(unit + 123), Buffer.alloc(MiB)])
    // chunks cut at odd places, a zero run split across chunks
    const cuts = [1000, unit * 3 + 17, unit * 5, image.length - 10, image.length]
    const chunks = cuts.map((end, i) => image.subarray(i === 0 ? 0 : cuts[i - 1]!, end))
    const path = join(dir.path, 'writer.raw')
    const writer = new SparseFileWriter(path)
    await pipeline(Readable.from(chunks), writer)
    expect((await readFile(path)).equals(image)).toBe(true)
    expect((await stat(path)).size).toBe(image.length)
    // at most the data units are written: 2 + 2 (the unaligned part spans two) + the chunk-edge units
    expect(writer.dataBytes).toBeLessThanOrEqual(unit * 6)
    expect(await allocatedBytes(path)).toBeLessThan(image.length / 2)
  })
})

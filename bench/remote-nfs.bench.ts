/**
 * NFS remote throughput against `nfs-cp` (libnfs-utils, `?version=3`) in the same run, both writing to
 * the same private NFS-Ganesha (test/services/nfs.ts; its export and the source file on tmpfs).
 *
 * Default size 1 GiB (× BENCH_SCALE; BENCH_SCALE=4 gives the 4 GiB) to keep the default run
 * short on a shared 2-core machine. Each case runs `rounds` times alternating (nfs-cp, ours, nfs-cp,
 * ours, ...) and the median run by throughput is reported, because this VM is noisy (±30 %). CPU is the
 * client's only, counted the same way on both sides (this process / the nfs-cp command); the server's
 * CPU (Ganesha, from /proc) and the whole machine's busy CPU (/proc/stat) go in `extra` so a run where
 * something else ran can be spotted. Files are removed through NFS (Ganesha keeps fds until REMOVE).
 */
import { createWriteStream } from 'node:fs'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { NfsRemote } from '../src/remotes/nfs/index.js'
import { parseRemoteUrl } from '../src/remotes/url.js'
import type { NfsRemoteUrl } from '../src/remotes/url-types.js'
import { startNFSDetailed } from '../test/services/nfs.js'
import { GiB, measure, MiB, runCommand, type BenchContext, type BenchRow, makeRandomFile as makeSource, feedFileOneBuffer as copyFileTo } from './lib.js'



/** Busy (non-idle) CPU seconds of the whole machine so far, from /proc/stat. */
async function machineBusySeconds(): Promise<number> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? ''
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = line.trim().split(/\s+/).slice(1).map(Number)
  return (user + nice + system + irq + softirq + steal) / 100
}

interface Run {
  seconds: number
  cpuSeconds: number
  peakRssMiB: number
  serverCpuSeconds: number
  machineCpuSeconds: number
}

function median(runs: Run[]): Run {
  return [...runs].sort((a, b) => a.seconds - b.seconds)[Math.floor(runs.length / 2)]!
}

export default async function bench(ctx: BenchContext): Promise<BenchRow[]> {
  const sizeBytes = Math.round(GiB * ctx.scale)
  const gib = sizeBytes / GiB
  const rounds = 3
  const source = join(ctx.tmpDir, 'source.bin')
  const readCopy = join(ctx.tmpDir, 'read-copy.bin')
  await makeSource(source, sizeBytes)
  const server = await startNFSDetailed({ baseDir: ctx.tmpDir })
  const url = parseRemoteUrl(server.url) as NfsRemoteUrl
  const remote = new NfsRemote(url)
  const libnfsUrl = (name: string) => `nfs://${server.host}${server.exportPath}/${name}?version=3`
  const rows: BenchRow[] = []
  const group = `nfs write ${gib.toFixed(2)} GiB`
  const readGroup = `nfs read ${gib.toFixed(2)} GiB`
  try {
    await remote.open()
    const withServerCpu = async (fn: () => Promise<{ seconds: number; cpuSeconds: number; peakRssMiB: number }>): Promise<Run> => {
      const s0 = await server.serverCpuSeconds()
      const m0 = await machineBusySeconds()
      const r = await fn()
      return { ...r, serverCpuSeconds: (await server.serverCpuSeconds()) - s0, machineCpuSeconds: (await machineBusySeconds()) - m0 }
    }
    const removeQuietly = (name: string) => remote.unlink(name).catch(() => undefined)
    const base: Run[] = []
    const ours: Run[] = []
    const baseRead: Run[] = []
    const oursRead: Run[] = []
    for (let i = 0; i < rounds; i++) {
      await removeQuietly('nfs-cp.bin')
      base.push(await withServerCpu(() => runCommand(`nfs-cp ${source} '${libnfsUrl('nfs-cp.bin')}'`)))
      await removeQuietly('nfs-cp.bin') // tmpfs space: at most source + one written file + one read copy at a time
      await removeQuietly('ours.bin')
      ours.push(
        await withServerCpu(() =>
          measure(async () => {
            await copyFileTo(source, await remote.createWriteStream('ours.bin', { expectedSizeBytes: sizeBytes }))
          }),
        ),
      )
      const written = await remote.stat('ours.bin')
      if (written.size !== sizeBytes) throw new Error(`wrote ${written.size} bytes, expected ${sizeBytes}`)
      ctx.log(`round ${i + 1}: nfs-cp ${(sizeBytes / MiB / base[i]!.seconds).toFixed(0)} MiB/s, NfsRemote ${(sizeBytes / MiB / ours[i]!.seconds).toFixed(0)} MiB/s`)
      // reads of the file just written: nfs-cp to a tmpfs file (it cannot open /dev/null) vs our read stream to the same tmpfs file
      baseRead.push(await withServerCpu(() => runCommand(`nfs-cp '${libnfsUrl('ours.bin')}' ${readCopy}`)))
      await rm(readCopy, { force: true })
      oursRead.push(
        await withServerCpu(() =>
          measure(async () => {
            await pipeline(await remote.createReadStream('ours.bin'), createWriteStream(readCopy))
          }),
        ),
      )
      await rm(readCopy, { force: true })
    }
    await removeQuietly('nfs-cp.bin')
    await removeQuietly('ours.bin')
    const row = (g: string, name: string, r: Run, baseline?: string): BenchRow => ({
      group: g,
      name,
      bytes: sizeBytes,
      seconds: r.seconds,
      cpuSeconds: r.cpuSeconds,
      peakRssMiB: r.peakRssMiB,
      ...(baseline === undefined ? {} : { baseline }),
      extra: { serverCpuSPerGiB: r.serverCpuSeconds / gib, machineBusyCpuSPerGiB: r.machineCpuSeconds / gib, runs: `median of ${rounds}` },
    })
    rows.push(row(group, 'nfs-cp (libnfs, v3)', median(base)))
    rows.push(row(group, 'backup-proxy NfsRemote (window 8 x 1 MiB)', median(ours), 'nfs-cp (libnfs, v3)'))
    rows.push(row(readGroup, 'nfs-cp to a tmpfs file', median(baseRead)))
    rows.push(row(readGroup, 'backup-proxy NfsRemote (4 x 1 MiB READs)', median(oursRead), 'nfs-cp to a tmpfs file'))
  } finally {
    await remote.close()
    await server.stop()
  }
  return rows
}

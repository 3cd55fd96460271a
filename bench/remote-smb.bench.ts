/**
 * SMB remote throughput against `smbclient` in the same run, both talking to the same private smbd
 * (free loopback port, share on tmpfs), same source file on tmpfs.
 *
 * Default size 1 GiB (× BENCH_SCALE; BENCH_SCALE=4 gives the 4 GiB) to keep the default run
 * short on a shared 2-core machine. Rows: upload (ours vs `smbclient put`), upload with signing
 * required by the client (ours vs `smbclient --client-protection=sign put`), download (ours vs
 * `smbclient get` to /dev/null). CPU is the client's only (this process / the smbclient command),
 * counted the same way on both sides; smbd's CPU is not included in either.
 */
import { chmod, chown, mkdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createRemote } from '../src/remotes/index.js'
import { startSambaServer } from '../test/services/smb.js'
import { GiB, measure, MiB, runCommand, type BenchContext, type BenchRow, makeRandomFile as makeSource, feedFileOneBuffer as upload } from './lib.js'



export default async function bench(ctx: BenchContext): Promise<BenchRow[]> {
  const sizeBytes = Math.round(GiB * ctx.scale)
  const source = join(ctx.tmpDir, 'source.bin')
  await makeSource(source, sizeBytes)
  const shareDir = join(ctx.tmpDir, 'share')
  await chmod(ctx.tmpDir, 0o755) // smbd works as the share's user: it must reach the share
  await mkdir(shareDir)
  await chown(shareDir, 34, 34)
  const server = await startSambaServer({ shareDir })
  const rows: BenchRow[] = []
  const group = `smb write ${(sizeBytes / GiB).toFixed(2)} GiB`
  const readGroup = `smb read ${(sizeBytes / GiB).toFixed(2)} GiB`
  const auth = `-U 'backup%${server.password}' -p ${server.port} //127.0.0.1/backups`
  try {
    const clean = async () => {
      for (const name of ['smbclient.bin', 'ours.bin']) await rm(join(shareDir, name), { force: true })
    }
    // baseline
    await clean()
    const base = await runCommand(`smbclient ${auth} -c 'put ${source} smbclient.bin'`)
    rows.push({ group, name: 'smbclient put', bytes: sizeBytes, ...base })
    ctx.log(`smbclient put: ${(sizeBytes / MiB / base.seconds).toFixed(0)} MiB/s`)

    for (const signing of [false, true]) {
      await clean()
      const remote = createRemote(server.url, { smbPort: server.port, smbRequireSigning: signing })
      await remote.open()
      const m = await measure(async () => {
        await upload(source, await remote.createWriteStream('ours.bin', { expectedSizeBytes: sizeBytes }))
      })
      const written = await stat(join(shareDir, 'ours.bin'))
      if (written.size !== sizeBytes) throw new Error(`wrote ${written.size} bytes, expected ${sizeBytes}`)
      if (signing) {
        await clean() // keep tmpfs use at source + one copy
        const signed = await runCommand(`smbclient --client-protection=sign ${auth} -c 'put ${source} smbclient.bin'`)
        rows.push({ group, name: 'smbclient put (signed)', bytes: sizeBytes, ...signed })
        rows.push({ group, name: 'backup-proxy SmbRemote (signed)', bytes: sizeBytes, ...m, baseline: 'smbclient put (signed)' })
      } else {
        rows.push({ group, name: 'backup-proxy SmbRemote', bytes: sizeBytes, ...m, baseline: 'smbclient put' })
        // downloads of the same file
        const get = await runCommand(`smbclient ${auth} -c 'get ours.bin /dev/null'`)
        rows.push({ group: readGroup, name: 'smbclient get', bytes: sizeBytes, ...get })
        const r = await measure(async () => {
          const sink = new Writable({ highWaterMark: 4 * MiB, write: (_c: Buffer, _e, cb) => cb() })
          await pipeline(await remote.createReadStream('ours.bin'), sink)
        })
        rows.push({ group: readGroup, name: 'backup-proxy SmbRemote', bytes: sizeBytes, ...r, baseline: 'smbclient get' })
      }
      await remote.close()
    }
  } finally {
    await server.stop()
  }
  return rows
}

/**
 * XAPI simulator as a source: it feeds every other benchmark, so it must never be the bottleneck.
 *
 * The simulator runs in its own process (`backup-proxy xapi-sim`), so in-process rows count only the
 * client's CPU; the simulator's CPU per GiB is reported in `extra` (from /proc/<pid>/stat).
 * - curl → /dev/null of `export_raw_vdi?format=vhd` and `format=raw` (the figure the issue asks for);
 * - openVdiExport (node:http client used by the worker threads) → drain, against curl;
 * - openVdiExport throttled with maxRateBytesPerSecond (achieved rate vs target).
 */
import { spawn } from 'node:child_process'
import { openVdiExport } from '../src/xapi/export.js'
import { GiB, MiB, measure, procCpuSeconds, runCommand, type BenchContext, type BenchRow } from './lib.js'

const USER = 'root'
const PASSWORD = 'bench'

async function startSim(diskSizeBytes: number): Promise<{ url: string; pid: number; stop: () => Promise<void> }> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'src/cli/main.ts', 'xapi-sim', '--vms', '1', '--disk-size', String(diskSizeBytes), '--fill-ratio', '1', '--listen', '127.0.0.1:0', '--user', USER, '--password', PASSWORD],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /listening on (\S+)/.exec(out)
      if (m?.[1] !== undefined) resolve(m[1])
    })
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    child.once('exit', (code) => reject(new Error(`xapi-sim exited (${code}): ${out}`)))
  })
  return {
    url,
    pid: child.pid as number,
    stop: async () => {
      child.kill('SIGTERM')
      await exited
    },
  }
}

export default async function xapiBench(ctx: BenchContext): Promise<BenchRow[]> {
  const diskSizeBytes = Math.max(1, Math.round(2 * ctx.scale)) * GiB
  const sim = await startSim(diskSizeBytes)
  const rows: BenchRow[] = []
  try {
    const auth = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`
    const vms = (await (await fetch(`${sim.url}/sim/vms`, { headers: { authorization: auth } })).json()) as { vdis: { ref: string }[] }[]
    const vdiRef = vms[0]?.vdis[0]?.ref
    if (vdiRef === undefined) throw new Error('the simulator has no VDI')
    const login = (await (
      await fetch(`${sim.url}/jsonrpc`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'session.login_with_password', params: [USER, PASSWORD] }),
      })
    ).json()) as { result: string }
    const sessionId = login.result
    const group = 'xapi-sim export'

    for (const format of ['vhd', 'raw'] as const) {
      const url = `${sim.url}/export_raw_vdi/?session_id=${encodeURIComponent(sessionId)}&vdi=${encodeURIComponent(vdiRef)}&format=${format}`
      const simCpu0 = await procCpuSeconds(sim.pid)
      const r = await runCommand(`curl -sf -o /dev/null -w '%{size_download}' '${url}'`)
      const simCpu = (await procCpuSeconds(sim.pid)) - simCpu0
      const bytes = Number(r.stdout.trim())
      rows.push({ group, name: `curl ${format} > /dev/null`, bytes, seconds: r.seconds, cpuSeconds: r.cpuSeconds, peakRssMiB: r.peakRssMiB, extra: { simCpuSPerGiB: simCpu / (bytes / GiB) } })
      ctx.log(`curl ${format}: ${(bytes / MiB / r.seconds).toFixed(0)} MiB/s`)
    }

    let bytes = 0
    const simCpu0 = await procCpuSeconds(sim.pid)
    const m = await measure(async () => {
      const { stream } = await openVdiExport({ url: sim.url, sessionId, vdiRef, format: 'vhd' })
      for await (const chunk of stream as AsyncIterable<Buffer>) bytes += chunk.length
    })
    const simCpu = (await procCpuSeconds(sim.pid)) - simCpu0
    rows.push({ group, name: 'openVdiExport vhd → drain', bytes, ...m, baseline: 'curl vhd > /dev/null', extra: { simCpuSPerGiB: simCpu / (bytes / GiB) } })
    ctx.log(`openVdiExport vhd: ${(bytes / MiB / m.seconds).toFixed(0)} MiB/s`)

    const rate = 200 * MiB
    let throttled = 0
    const limit = Math.min(diskSizeBytes, 512 * MiB)
    const t = await measure(async () => {
      const controller = new AbortController()
      const { stream } = await openVdiExport({ url: sim.url, sessionId, vdiRef, format: 'raw', maxRateBytesPerSecond: rate, signal: controller.signal })
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        throttled += chunk.length
        if (throttled >= limit) {
          controller.abort()
          break
        }
      }
    })
    rows.push({ group, name: 'openVdiExport raw, maxRate 200 MiB/s', bytes: throttled, ...t, extra: { targetMiBps: rate / MiB } })
    ctx.log(`openVdiExport throttled to 200 MiB/s: ${(throttled / MiB / t.seconds).toFixed(0)} MiB/s`)
  } finally {
    await sim.stop()
  }
  return rows
}

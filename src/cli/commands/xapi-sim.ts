/**
 * `backup-proxy xapi-sim`: runs the XAPI simulator in the foreground until SIGINT/SIGTERM, printing its
 * URL, credentials and VMs. Faults can be set at start with `--fault '<json>'` (repeatable) or later
 * through the admin API (`POST /sim/faults`).
 */
import { readFile } from 'node:fs/promises'
import type { Command } from 'commander'
import { UsageError } from '../../common/errors.js'
import type { SimFault } from '../../xapi/sim/faults.js'
import type { CliIo } from '../context.js'
import { collect, intArg, sizeOption } from '../context.js'

interface XapiSimFlags {
  vms: number
  diskSize: number
  disksPerVm: number
  fillRatio: string
  seed: string
  listen: string
  user: string
  password: string
  fault?: string[]
  tlsCert?: string
  tlsKey?: string
}

function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value)
  const port = Number(m?.[3])
  if (m === null || port > 65535) throw new UsageError(`--listen must be host:port (e.g. 127.0.0.1:8080, [::1]:0), got "${value}"`)
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port }
}

function parseFlags(flags: XapiSimFlags, parseSimFault: (v: unknown) => SimFault): { fillRatio: number; seed: number; host: string; port: number; faults: SimFault[] } {
  const fillRatio = Number(flags.fillRatio)
  if (!/^\d*\.?\d+$/.test(flags.fillRatio) || fillRatio > 1) throw new UsageError(`--fill-ratio must be a number from 0 to 1, got "${flags.fillRatio}"`)
  const seed = Number(flags.seed)
  if (!/^-?\d+$/.test(flags.seed) || !Number.isSafeInteger(seed)) throw new UsageError(`--seed must be a whole number, got "${flags.seed}"`)
  const faults = (flags.fault ?? []).map((text) => {
    try {
      return parseSimFault(JSON.parse(text) as unknown)
    } catch (error) {
      throw new UsageError(`--fault ${text}: ${(error as Error).message}`)
    }
  })
  return { fillRatio, seed, ...parseListen(flags.listen), faults }
}

export function registerXapiSim(program: Command, io: CliIo): void {
  program
    .command('xapi-sim')
    .description('run an XAPI simulator (JSON-RPC + export_raw_vdi) with deterministic VMs and disks')
    .option('--vms <n>', 'number of VMs', intArg('--vms', 0, 10_000), 2)
    .addOption(sizeOption('--disk-size <size>', 'virtual size of each disk', 1024 ** 3))
    .option('--disks-per-vm <n>', 'disks per VM', intArg('--disks-per-vm', 0, 16), 1)
    .option('--fill-ratio <ratio>', 'share of blocks that hold data (0..1)', '0.5')
    .option('--seed <seed>', 'seed of the disk content', '1')
    .option('--listen <host:port>', 'listen address', '127.0.0.1:8080')
    .option('--user <name>', 'accepted user', 'root')
    .option('--password <pw>', 'accepted password', 'password')
    .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate (needs --tls-key)')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option('--fault <json>', 'export fault to inject, e.g. {"kind":"reset","afterBytes":1048576} (repeatable)', collect)
    .action(async (flags: XapiSimFlags) => {
      const [{ parseSimFault }, { startXapiSimulator }] = await Promise.all([import('../../xapi/sim/faults.js'), import('../../xapi/sim/index.js')])
      const parsed = parseFlags(flags, parseSimFault)
      if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) throw new UsageError('--tls-cert and --tls-key go together')
      const tls =
        flags.tlsCert === undefined || flags.tlsKey === undefined ? undefined : { cert: await readFile(flags.tlsCert), key: await readFile(flags.tlsKey) }
      const sim = await startXapiSimulator({
        vms: flags.vms,
        diskSizeBytes: flags.diskSize,
        disksPerVm: flags.disksPerVm,
        fillRatio: parsed.fillRatio,
        seed: parsed.seed,
        host: parsed.host,
        port: parsed.port,
        user: flags.user,
        password: flags.password,
        ...(tls === undefined ? {} : { tls }),
      })
      for (const f of parsed.faults) sim.setFault(f)
      io.stdout(`XAPI simulator listening on ${sim.url}\n`)
      io.stdout(`credentials: user ${sim.user}, password ${sim.password}\n`)
      for (const vm of sim.listVms()) {
        io.stdout(`VM ${vm.uuid} ${vm.nameLabel}: ${vm.vdis.map((d) => `VDI ${d.uuid} (${d.virtualSizeBytes} bytes)`).join(', ')}\n`)
      }
      io.stdout('admin API: GET /sim/vms, POST /sim/vms/<uuid>/write {"blocks"|"ratio"}, POST|DELETE /sim/faults (HTTP basic auth)\n')
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGINT', stop)
          process.off('SIGTERM', stop)
          resolve()
        }
        process.on('SIGINT', stop)
        process.on('SIGTERM', stop)
      })
      await sim.close()
      io.stdout('XAPI simulator stopped\n')
    })
}

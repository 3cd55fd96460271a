/**
 * The XAPI simulator with its NBD server (insecure_nbd network: no TLS, as the ceiling tools read it),
 * in its own process for bench/nbd.bench.ts: `node --import tsx bench/nbd-sim-child.ts <diskBytes>`.
 * Prints `listening on <url>` and runs until SIGTERM.
 */
import { startXapiSimulator } from '../src/xapi/sim/index.js'

const sim = await startXapiSimulator({ vms: 1, disksPerVm: 1, diskSizeBytes: Number(process.argv[2]), fillRatio: 1, seed: 5, user: 'root', password: 'bench-password', nbd: {} })
console.log(`listening on ${sim.url}`)
process.once('SIGTERM', () => void sim.close().then(() => process.exit(0)))

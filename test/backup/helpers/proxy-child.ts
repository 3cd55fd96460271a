/** A proxy in its own process (for the SIGKILL test): env REDIS_URL, SEAL_KEY, PROXY_ID; prints "ready". */
import { compileConfig } from '../../../src/config/index.js'
import { silentLogger } from '../../../src/common/log.js'
import { SealKey } from '../../../src/queue/seal.js'
import { builtinProcessors } from '../../../src/workers/builtin-processors.js'
import { ProxyRuntime } from '../../../src/workers/proxy.js'
import { proxyConfig } from './proxy-config.js'

const config = compileConfig(proxyConfig(process.env.REDIS_URL!, process.env.SEAL_KEY!, process.env.PROXY_ID!))
const runtime = new ProxyRuntime({ config, processors: builtinProcessors({ standIns: false }), sealKey: SealKey.fromString(process.env.SEAL_KEY!), logger: silentLogger })
await runtime.start()
process.stdout.write('ready\n')

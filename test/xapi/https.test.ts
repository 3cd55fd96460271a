/** The simulator over HTTPS with a self-signed certificate: refused unless `allowUnauthorized`. */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { XapiError } from '../../src/common/errors.js'
import { XapiClient } from '../../src/xapi/client.js'
import { openVdiExport } from '../../src/xapi/export.js'
import { openXvaExport } from '../../src/xva/http.js'
import { startXapiSimulator, type XapiSimulator } from '../../src/xapi/sim/index.js'
import { useTempDir } from '../helpers/tmp.js'
import { run } from './helpers.js'

const MiB = 1024 * 1024
const tmp = useTempDir('bp-xapi-tls-')

describe('XAPI over HTTPS', () => {
  let sim: XapiSimulator
  beforeAll(async () => {
    const dir = tmp()
    await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')])
    sim = await startXapiSimulator({
      vms: 1,
      diskSizeBytes: 4 * MiB,
      disksPerVm: 1,
      fillRatio: 1,
      seed: 9,
      tls: { key: await readFile(join(dir, 'key.pem')), cert: await readFile(join(dir, 'cert.pem')) },
    })
  })
  afterAll(async () => {
    await sim?.close()
  })

  it('connects and exports with allowUnauthorized, refuses the certificate without it', async () => {
    expect(sim.url).toMatch(/^https:\/\//)
    const refused = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password, connectTimeoutMs: 10_000, retry: { tries: 1 } }).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(XapiError)
    expect((refused as Error).message).toMatch(/certificate/i)

    const client = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password, allowUnauthorized: true })
    try {
      const vdi = client.listVdis()[0]!
      const d = await client.exportDescriptor(vdi.$ref, { format: 'raw' })
      expect(d.allowUnauthorized).toBe(true)
      await expect(openVdiExport({ ...d, allowUnauthorized: false })).rejects.toThrow(/certificate/i)
      const { stream } = await openVdiExport(d)
      const h = createHash('sha256')
      for await (const chunk of stream as AsyncIterable<Buffer>) h.update(chunk)
      const truth = createHash('sha256')
      for await (const chunk of sim.rawDiskContent(vdi.uuid) as AsyncIterable<Buffer>) truth.update(chunk)
      expect(h.digest('hex')).toBe(truth.digest('hex'))
    } finally {
      await client.close()
    }
  })

  it('exports an XVA with allowUnauthorized (bare HTTPS GET), refuses the certificate without it', async () => {
    const client = await XapiClient.connect({ url: sim.url, user: sim.user, password: sim.password, allowUnauthorized: true })
    try {
      const d = await client.vmExportDescriptor(client.listVms()[0]!.$ref, 'false')
      await expect(openXvaExport({ ...d, allowUnauthorized: false })).rejects.toThrow(/SELF_SIGNED|certificate/i)
      const res = await openXvaExport(d)
      let size = 0
      for await (const chunk of res as AsyncIterable<Buffer>) size += chunk.length
      expect(res.complete).toBe(true)
      expect(size % 512).toBe(0)
      expect(size).toBeGreaterThan(4 * MiB)
    } finally {
      await client.close()
    }
  })
})

import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { attachRemoteMetrics, createMetrics, createThreadMetricsRecorder, applyMetricDeltas, type MetricsMessage } from '../../src/metrics/index.js'
import { LocalRemote } from '../../src/remotes/local.js'
import { parseRemoteUrl } from '../../src/remotes/url.js'
import type { FileRemoteUrl } from '../../src/remotes/url-types.js'
import { useTempDir } from '../helpers/tmp.js'

const tempDir = useTempDir('bp-remote-metrics-')

async function sizeOnDisk(dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size
  }
  return total
}

function localRemote(path: string): LocalRemote {
  return new LocalRemote(parseRemoteUrl(`file://${path}`) as FileRemoteUrl)
}

async function sample(metrics: ReturnType<typeof createMetrics>, name: 'backup_proxy_bytes_written_total' | 'backup_proxy_remote_bytes_read_total' | 'backup_proxy_remote_operations_total', labels: Record<string, string>): Promise<number> {
  const got = await metrics.counter(name).get()
  return got.values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((n, v) => n + v.value, 0)
}

describe('remote metrics', () => {
  it('counts bytes written to a real local remote equal to the bytes on disk, and reads back', async () => {
    const metrics = createMetrics({ defaultMetrics: false })
    const remote = localRemote(tempDir())
    const detach = attachRemoteMetrics(remote, metrics, 'local-1')
    await remote.open()
    const chunk = Buffer.alloc(1024 * 1024 + 17, 7)
    const out = await remote.createWriteStream('xo-vm-backups/vm/a.vhd')
    await pipeline(Readable.from([chunk, chunk, chunk]), out)
    await remote.writeFile('xo-vm-backups/vm/b.json', JSON.stringify({ hello: 'world' }))
    const onDisk = await sizeOnDisk(tempDir())
    expect(onDisk).toBe(3 * chunk.length + 17)
    expect(await sample(metrics, 'backup_proxy_bytes_written_total', { remote: 'local-1' })).toBe(onDisk)
    const back = await remote.readFile('xo-vm-backups/vm/b.json')
    expect(await sample(metrics, 'backup_proxy_remote_bytes_read_total', { remote: 'local-1' })).toBe(back.length)
    await expect(remote.stat('missing')).rejects.toThrow()
    expect(await sample(metrics, 'backup_proxy_remote_operations_total', { remote: 'local-1', op: 'stat', status: 'error' })).toBe(1)
    const text = await metrics.text()
    // a logical refusal (ENOENT) is an answer: the remote stays up
    expect(text).toContain('backup_proxy_remote_up{remote="local-1"} 1')
    expect(text).toMatch(/backup_proxy_remote_operation_duration_seconds_count\{remote="local-1",op="stat"\} [1-9]/)
    expect(text).not.toContain(tempDir())
    detach()
    await remote.writeFile('c', 'x')
    expect(await sample(metrics, 'backup_proxy_bytes_written_total', { remote: 'local-1' })).toBe(onDisk)
  })

  it('marks a remote down when it cannot be opened', async () => {
    const metrics = createMetrics({ defaultMetrics: false })
    const remote = localRemote(join(tempDir(), 'no-such-root'))
    attachRemoteMetrics(remote, metrics, 'gone')
    await expect(remote.open()).rejects.toThrow()
    expect(await metrics.text()).toContain('backup_proxy_remote_up{remote="gone"} 0')
  })

  it('inside a thread, sends the counts as deltas through the recorder', async () => {
    const metrics = createMetrics({ defaultMetrics: false })
    const sent: MetricsMessage[] = []
    const recorder = createThreadMetricsRecorder((m) => sent.push(m), { flushIntervalMs: 0 })
    const remote = localRemote(tempDir())
    attachRemoteMetrics(remote, recorder, 'thread-remote')
    await remote.writeFile('t/one', Buffer.alloc(5000))
    await remote.writeFile('t/two', Buffer.alloc(3000))
    recorder.close()
    for (const m of sent) expect(applyMetricDeltas(metrics, m.deltas).rejected).toEqual([])
    expect(await sample(metrics, 'backup_proxy_bytes_written_total', { remote: 'thread-remote' })).toBe(8000)
    expect(await metrics.text()).not.toContain('backup_proxy_remote_up{remote="thread-remote"}')
  })

  it('refuses a URL as the remote label', () => {
    const metrics = createMetrics({ defaultMetrics: false })
    expect(() => attachRemoteMetrics(localRemote(tempDir()), metrics, 's3://ak:sk@host/bucket')).toThrow(/never its URL/)
  })
})

import { MessageChannel, Worker, receiveMessageOnPort } from 'node:worker_threads'
import { describe, expect, it } from 'vitest'
import { applyMetricDeltas, createMetrics, createThreadMetricsRecorder, isMetricsMessage, type MetricsMessage } from '../../src/metrics/index.js'

const WORKER = new URL('./fixtures/delta-worker.ts', import.meta.url)

async function value(metrics: ReturnType<typeof createMetrics>, name: 'backup_proxy_bytes_read_total' | 'backup_proxy_bytes_written_total' | 'backup_proxy_errors_total', labels: Record<string, string> = {}): Promise<number> {
  const got = await metrics.counter(name).get()
  const sample = got.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))
  return sample?.value ?? 0
}

describe('thread metrics', () => {
  it('sums deltas from real worker threads exactly, including threads that exit at once', async () => {
    const metrics = createMetrics({ defaultMetrics: false })
    const threads = [
      { id: 0, blocks: 400, exitHard: false },
      { id: 1, blocks: 333, exitHard: true },
      { id: 2, blocks: 250, exitHard: true },
    ]
    const blockBytes = 2 * 1024 * 1024
    let messages = 0
    let rejected = 0
    await Promise.all(
      threads.map(async (t) => {
        const { port1, port2 } = new MessageChannel()
        const onMessage = (message: unknown): void => {
          expect(isMetricsMessage(message)).toBe(true)
          messages++
          rejected += applyMetricDeltas(metrics, (message as MetricsMessage).deltas).rejected.length
        }
        port1.on('message', onMessage)
        // the fixture is TypeScript: the worker registers tsx's loader, then imports it
        const bootstrap = `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(WORKER.href)}) })`
        const worker = new Worker(bootstrap, {
          eval: true,
          workerData: { port: port2, id: t.id, blocks: t.blocks, blockBytes, exitHard: t.exitHard },
          transferList: [port2],
        })
        const exitCode = await new Promise<number>((resolve, reject) => {
          worker.once('error', reject)
          worker.once('exit', resolve)
        })
        expect(exitCode).toBe(0)
        // whatever the thread posted before it exited is queued on port1: drain it synchronously
        port1.off('message', onMessage)
        for (let m = receiveMessageOnPort(port1); m !== undefined; m = receiveMessageOnPort(port1)) onMessage(m.message)
        port1.close()
      }),
    )
    const total = threads.reduce((n, t) => n + t.blocks, 0)
    expect(rejected).toBe(0)
    expect(messages).toBeGreaterThan(threads.length) // batches, not one message per thread
    expect(await value(metrics, 'backup_proxy_bytes_read_total')).toBe(total * blockBytes)
    expect(await value(metrics, 'backup_proxy_bytes_written_total', { remote: 'even' })).toBe((400 + 250) * blockBytes)
    expect(await value(metrics, 'backup_proxy_bytes_written_total', { remote: 'odd' })).toBe(333 * blockBytes)
    expect(await value(metrics, 'backup_proxy_bytes_written_total', { remote: 'all' })).toBe(total * blockBytes)
    expect(await value(metrics, 'backup_proxy_errors_total', { code: 'E_REMOTE' })).toBe(threads.length)
    const text = await metrics.text()
    expect(text).toContain('backup_proxy_remote_operation_duration_seconds_count{remote="odd",op="write"} 333')
    expect(text).toContain('backup_proxy_remote_operation_duration_seconds_count{remote="even",op="write"} 650')
  })

  it('batches counters, keeps observations, and sends each value once', () => {
    const sent: MetricsMessage[] = []
    const rec = createThreadMetricsRecorder((m) => sent.push(m), { flushIntervalMs: 0, maxPending: 3 })
    rec.inc('backup_proxy_bytes_read_total', {}, 5)
    rec.inc('backup_proxy_bytes_read_total', {}, 7)
    rec.inc('backup_proxy_bytes_written_total', { remote: 'a' }, 1)
    rec.gaugeAdd('backup_proxy_threads_busy', {}, 1)
    rec.gaugeAdd('backup_proxy_threads_busy', {}, -1) // nets to 0: not sent
    expect(sent).toHaveLength(0)
    rec.flush()
    expect(sent).toEqual([
      {
        type: 'metrics',
        deltas: [
          { metric: 'backup_proxy_bytes_read_total', kind: 'counter', labels: {}, value: 12 },
          { metric: 'backup_proxy_bytes_written_total', kind: 'counter', labels: { remote: 'a' }, value: 1 },
        ],
      },
    ])
    rec.flush()
    expect(sent).toHaveLength(1) // nothing pending: nothing sent twice
    for (let i = 0; i < 3; i++) rec.observe('backup_proxy_disk_export_duration_seconds', {}, i)
    expect(sent).toHaveLength(2) // maxPending reached
    expect(sent[1]!.deltas.map((d) => d.value)).toEqual([0, 1, 2])
    rec.close()
    rec.inc('backup_proxy_bytes_read_total', {}, 1) // after close: sent at once
    expect(sent).toHaveLength(3)
    expect(() => rec.inc('backup_proxy_bytes_read_total', {}, -1)).toThrow(/cannot decrease/)
    expect(() => rec.observe('backup_proxy_disk_export_duration_seconds', {}, Number.POSITIVE_INFINITY)).toThrow(/finite/)
  })

  it('keeps deltas whose send failed and reports the failure on the next flush', () => {
    let fail = true
    const sent: MetricsMessage[] = []
    const rec = createThreadMetricsRecorder(
      (m) => {
        if (fail) throw new Error('port closed')
        sent.push(m)
      },
      { flushIntervalMs: 0 },
    )
    rec.inc('backup_proxy_bytes_read_total', {}, 3)
    expect(() => rec.flush()).toThrow(/port closed/)
    fail = false
    rec.inc('backup_proxy_bytes_read_total', {}, 4)
    rec.flush()
    expect(sent).toEqual([{ type: 'metrics', deltas: [{ metric: 'backup_proxy_bytes_read_total', kind: 'counter', labels: {}, value: 7 }] }])
  })
})

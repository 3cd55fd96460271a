/** The queue CLI commands (backup, cancel, status) against real Redis and an in-process stand-in proxy. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { inject } from 'vitest'
import { runCli } from '../../src/cli/program.js'
import type { CliIo } from '../../src/cli/context.js'
import type { JobSummary } from '../../src/queue/task-log.js'
import { useTempDir } from '../helpers/tmp.js'
import { sealKeyText, startProxy, testConfig, uid, VM1 } from './fixtures.js'

const redisUrl = inject('redisUrl')
const tmp = useTempDir('bp-cli-')

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = ''
  let err = ''
  const io: CliIo = { stdout: (t) => void (out += t), stderr: (t) => void (err += t), isTTY: false }
  const code = await runCli([...args, '--redis-url', redisUrl], io)
  return { code, out, err }
}

beforeAll(() => {
  process.env.BACKUP_PROXY_SECURITY_SEAL_KEY = sealKeyText
  process.env.BACKUP_PROXY_LOG_LEVEL = 'silent'
})
afterAll(() => {
  delete process.env.BACKUP_PROXY_SECURITY_SEAL_KEY
  delete process.env.BACKUP_PROXY_LOG_LEVEL
})

describe('queue CLI', () => {
  it('backup runs a task file through a proxy and prints the summary; status shows the queue and the proxy', async () => {
    const config = testConfig(redisUrl, { proxy: { id: uid('p') } })
    const proxy = await startProxy(config)
    try {
      const task = {
        kind: 'backup.run',
        job: { id: uid('job'), mode: 'full', vms: { uuid: [VM1] }, settings: { '': { standInDir: tmp(), standInDiskBytes: 65536 } } },
        schedule: { id: 's' },
        remotes: { r: { url: 'file:///tmp/x' } },
        xapis: { x: { url: 'https://h', credentials: { username: 'u', password: 'pw-not-printed' } } },
      }
      const { writeFile } = await import('node:fs/promises')
      const file = `${tmp()}/task.json`
      await writeFile(file, JSON.stringify(task))
      const r = await cli(['backup', '--proxy', config.proxy.id, '--task', file, '--json'])
      expect(r.code).toBe(0)
      const summary = JSON.parse(r.out) as JobSummary
      expect(summary.status).toBe('success')
      const human = await cli(['job', 'show', summary.jobId])
      expect(human.out).toMatch(/^ok {2}backup\.run/m)
      expect(r.out + r.err).not.toContain('pw-not-printed')

      const s = await cli(['status', '--json'])
      expect(s.code).toBe(0)
      const status = JSON.parse(s.out) as { queues: { name: string; counts: Record<string, number> }[]; proxies: { instance: string }[] }
      expect(status.queues.find((q) => q.name === proxy.queues[0])?.counts.completed).toBeGreaterThanOrEqual(1)
      expect(status.proxies.map((p) => p.instance)).toContain(proxy.instance)
      const text = await cli(['status'])
      expect(text.out).toContain(proxy.queues[0])
      expect(text.out).toContain(config.proxy.id)
    } finally {
      await proxy.shutdown()
    }
  })

  it('backup --no-wait then cancel removes a delayed job; an invalid task exits 2 naming the field', async () => {
    const id = uid('p')
    const r = await cli(['backup', '--proxy', id, '--xapi', 'https://root:pw@h.invalid', '--vm', VM1, '--remote', 'file:///tmp/r', '--job-id', uid('j'), '--delay', '1h', '--no-wait', '--json'])
    expect(r.code).toBe(0)
    const { jobId } = JSON.parse(r.out) as { jobId: string }
    const c = await cli(['cancel', jobId, '--proxy', id])
    expect(c.code).toBe(0)
    expect(c.out).toContain('removed')
    expect((await cli(['cancel', jobId, '--proxy', id])).code).toBe(2)
    const bad = await cli(['backup', '--proxy', id, '--xapi', 'https://root:pw@h.invalid', '--vm', VM1, '--job-id', 'bad/id', '--remote', 'file:///tmp/r', '--no-wait'])
    expect(bad.code).toBe(2)
    expect(bad.err).toContain('E_TASK_INVALID')
    expect(bad.err).toContain('job.id')
    expect((await cli(['backup', '--vm', VM1])).code).toBe(2)
  })
})

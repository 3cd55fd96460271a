/** `backup-proxy xapi-sim`: runs in the foreground, prints URL and credentials, stops on SIGTERM; bad flags exit 2. */
import { spawn } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { runCli } from '../../src/cli/program.js'
import { XapiClient } from '../../src/xapi/client.js'

function capture(): { io: { stdout: (t: string) => void; stderr: (t: string) => void; isTTY: boolean }; out: () => string } {
  let text = ''
  return { io: { stdout: (t) => (text += t), stderr: (t) => (text += t), isTTY: false }, out: () => text }
}

describe('backup-proxy xapi-sim', () => {
  it('serves a pool the client can use, and stops on SIGTERM', async () => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'xapi-sim', '--vms', '3', '--disk-size', '8M', '--disks-per-vm', '2', '--listen', '127.0.0.1:0', '--password', 'cli-secret', '--fault', '{"kind":"http-error","status":503}'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const check = (): void => {
          // the banner ends with the admin API line: wait for all of it (stdout may arrive in pieces)
          const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out)
          if (m?.[1] !== undefined && out.includes('admin API:')) resolve(m[1])
        }
        child.stdout.on('data', check)
        child.once('exit', () => reject(new Error(`xapi-sim exited: ${out}`)))
      })
      expect(out).toContain('password cli-secret')
      const client = await XapiClient.connect({ url, user: 'root', password: 'cli-secret' })
      try {
        expect(client.listVms()).toHaveLength(3)
        expect(client.listVdis()).toHaveLength(6)
        // the --fault flag is active
        const vdi = client.listVdis()[0]!
        await expect(client.openExport(vdi.$ref, { format: 'raw' })).rejects.toMatchObject({ fields: { httpStatus: 503 } })
      } finally {
        await client.close()
      }
    } finally {
      child.kill('SIGTERM')
    }
    expect(await exited).toBe(0)
    expect(out).toContain('XAPI simulator stopped')
  })

  it('exits 2 with a precise message on bad flags', async () => {
    for (const [args, message] of [
      [['--fill-ratio', '2'], /--fill-ratio must be a number from 0 to 1/],
      [['--listen', 'nowhere'], /--listen must be host:port/],
      [['--fault', '{"kind":"reset"}'], /--fault .*afterBytes/],
      [['--disk-size', '3M'], /multiple of 2 MiB/],
      [['--vms', '-1'], /--vms must be a whole number/],
    ] as const) {
      const c = capture()
      expect(await runCli(['xapi-sim', ...args], c.io)).toBe(2)
      expect(c.out()).toMatch(message)
    }
  })
})
